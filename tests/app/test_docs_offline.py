"""``/docs`` and ``/redoc`` load Swagger UI and ReDoc from the service itself (fastapi-offline's
assets), never from a CDN; who may read them still follows the API key. (tests/browser renders
them in Chromium with every other host unreachable.)"""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from app.docs import ASSETS_URL
from app.main import create_app

ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


def unstarted(make_settings, **overrides) -> TestClient:
    """A client on an app whose model is never loaded: the docs need none."""
    return TestClient(create_app(make_settings(**overrides)), raise_server_exceptions=False)


def referenced_urls(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)=["']([^"']+)["']""", html) + re.findall(
        r"""url:\s*['"]([^'"]+)['"]""", html
    )


@pytest.mark.parametrize(
    ("path", "assets"),
    [
        ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}),
        ("/redoc", {"redoc.standalone.js", "favicon.png"}),
    ],
)
def test_docs_pages_reference_only_local_assets_that_are_served(make_settings, path, assets):
    client = unstarted(make_settings)
    page = client.get(path)
    assert page.status_code == 200
    assert "http://" not in page.text and "https://" not in page.text, "no CDN, no fonts"
    urls = referenced_urls(page.text)
    assert {f"{ASSETS_URL}/{name}" for name in assets} <= set(urls)
    for url in urls:
        assert url.startswith("/"), url
        response = client.get(url)
        assert response.status_code == 200, url
        suffix = url[url.rfind(".") :]
        if suffix in ASSET_TYPES:
            assert response.headers["content-type"].split(";")[0] == ASSET_TYPES[suffix], url
            assert len(response.content) > 1000, url
    assert "fonts.googleapis" not in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "img-src 'self' data: blob:" in policy


def test_swagger_ui_sends_the_schema_to_no_validator(make_settings):
    page = unstarted(make_settings).get("/docs").text
    assert '"validatorUrl": null' in page


def test_docs_stay_behind_the_key_but_their_assets_are_public(make_settings):
    keyed = unstarted(make_settings, api_key="s3cret")
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert keyed.get(path).status_code == 401, path
        assert keyed.get(path, headers={"X-API-Key": "s3cret"}).status_code == 200, path
    assert keyed.get(f"{ASSETS_URL}/swagger-ui-bundle.js").status_code == 200
    public = unstarted(make_settings, api_key="s3cret", public_docs=True)
    assert public.get("/redoc").status_code == 200


def test_docs_switched_off_serve_nothing(make_settings):
    hidden = unstarted(make_settings, public_docs=False)
    for path in ("/docs", "/redoc", "/openapi.json", f"{ASSETS_URL}/swagger-ui-bundle.js"):
        assert hidden.get(path).status_code == 404, path
