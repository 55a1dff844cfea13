"""The field page's files: shipped with the package, served at ``/`` to anyone, loading nothing
from another origin, and calling the API the service really has. (tests/browser runs it.)"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from html.parser import HTMLParser
from importlib.resources import files
from pathlib import Path

import pytest

from app.field import CONTENT_SECURITY_POLICY
from app.security import api_key_header

REPO = Path(__file__).resolve().parents[2]
PAGE_FILES = ("index.html", "field.css", "field.js", "manifest.webmanifest", "icon.svg")
TYPES = {
    "field.css": "text/css",
    "field.js": "text/javascript",
    "manifest.webmanifest": "application/manifest+json",
    "icon.svg": "image/svg+xml",
}


class _Tags(HTMLParser):
    """Every start tag with its attributes, and whether any inline script or style exists."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline_code: list[str] = []
        self._open: str | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._open = tag
        if "style" in dict(attrs) or any(name.startswith("on") for name, _ in attrs):
            self.inline_code.append(f"<{tag}> with inline style or handler")

    def handle_data(self, data):
        if self._open in ("script", "style") and data.strip():
            self.inline_code.append(f"<{self._open}> {data.strip()[:40]}")

    def handle_endtag(self, tag):
        self._open = None


def page_text(name: str) -> str:
    return (files("app.field") / "static" / name).read_text(encoding="utf-8")


def index_tags() -> _Tags:
    parser = _Tags()
    parser.feed(page_text("index.html"))
    return parser


def test_page_files_are_package_data_that_a_wheel_ships():
    static = files("app.field") / "static"
    for name in PAGE_FILES:
        assert (static / name).is_file(), name
    # `pip install .` (the Dockerfile) copies only what package-data names; tests/deploy
    # builds that wheel and compares it with the source tree.
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["app.field"]
    for name in PAGE_FILES:
        assert any(fnmatch.fnmatch(f"static/{name}", p) for p in patterns), name


def test_the_page_is_public_while_the_api_needs_the_key(client_for):
    keyed = client_for(api_key="s3cret")
    page = keyed.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<title>Invasive plant check</title>" in page.text
    for name, media_type in TYPES.items():
        asset = keyed.get(f"/field/{name}")
        assert asset.status_code == 200, name
        assert asset.headers["content-type"].split(";")[0] == media_type, name
    assert keyed.get("/v1/model").status_code == 401
    assert keyed.get("/v1/model", headers={"X-API-Key": "s3cret"}).status_code == 200


def test_the_page_is_served_with_a_strict_content_security_policy(client):
    page = client.get("/")
    policy = page.headers["content-security-policy"]
    assert policy == CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    # The policy forbids inline code, so the page must have none.
    tags = index_tags()
    assert tags.inline_code == []
    assert [a.get("src") for t, a in tags.tags if t == "script"] == ["field/field.js"]


def test_the_page_refers_only_to_its_own_files(client):
    tags = index_tags()
    refs = [a[k] for _, a in tags.tags for k in ("src", "href") if a.get(k)]
    assert refs, "the page links its stylesheet, script, icon and manifest"
    for ref in refs:
        # Relative ("field/x"), so the page also works behind a proxy under a path prefix.
        assert not ref.startswith(("/", "http:", "https:", "//")), ref
        assert client.get(f"/{ref}").status_code == 200, ref
    manifest = json.loads(page_text("manifest.webmanifest"))
    for icon in manifest["icons"]:
        assert client.get(f"/field/{icon['src']}").status_code == 200
    assert manifest["start_url"] == "../"  # relative to /field/manifest.webmanifest: the page


@pytest.mark.parametrize("name", PAGE_FILES)
def test_no_page_file_names_another_origin(name):
    text = page_text(name)
    if name.endswith(".svg"):
        text = text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text) == []


def test_the_script_calls_the_api_the_service_has(client):
    script = page_text("field.js")
    paths = set(client.app.openapi()["paths"])
    for path in ("v1/model", "v1/predict", "v1/predict/batch"):
        assert f'"{path}"' in script and f"/{path}" in paths, path
    assert f'"{api_key_header.model.name}"' in script  # the header app.security reads
    # The multipart fields the upload routes read (see app.api.predict).
    assert '"file"' in script and '"files"' in script
    # Every error code the service documents that a photo can get has plain words.
    for code in ("unsupported_media_type", "corrupt_image", "empty_file", "image_too_large",
                 "image_too_complex", "decode_timeout", "unauthorized", "queue_full",
                 "at_capacity", "request_timeout"):
        assert f"{code}:" in script, code


def test_the_page_and_its_files_need_no_model(make_settings):
    """``/`` answers while the model is still loading (it only needs static files)."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    client = TestClient(create_app(make_settings()))  # lifespan not run: nothing loaded
    assert client.get("/").status_code == 200
    assert client.get("/field/field.js").status_code == 200
