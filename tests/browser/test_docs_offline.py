"""``/docs`` (Swagger UI) and ``/redoc`` render in a browser that can reach nothing but
127.0.0.1: every asset comes from the service itself."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.chrome import (
    Fetch,
    console_errors,
    foreign_requests,
    requests_made,
    skip_without_chromium,
)

skip_without_chromium()

WAIT_S = 30
REDOCLY_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def test_swagger_ui_renders_offline(driver, field_service, stopwatch):
    driver.get(field_service.base_url + "/docs")
    paths = WebDriverWait(driver, WAIT_S).until(
        lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")]
    )
    stopwatch.lap("Swagger UI rendered")
    title = driver.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text
    assert "Invasive species prediction service" in title
    assert {"/v1/predict", "/v1/predict/batch", "/v1/model"} <= set(paths)
    fetches = requests_made(driver)
    print(f"\n/docs loaded {len(fetches)} URLs: {[f.url[:80] for f in fetches]}")
    assert any(f.url.endswith("/docs-assets/swagger-ui-bundle.js") for f in fetches)
    assert foreign_requests(fetches, field_service.base_url) == []
    assert console_errors(driver) == []


def test_redoc_renders_offline(driver, field_service, stopwatch):
    driver.get(field_service.base_url + "/redoc")
    WebDriverWait(driver, WAIT_S).until(
        lambda d: "Score several photos in one request" in d.find_element(By.TAG_NAME, "body").text
    )
    stopwatch.lap("ReDoc rendered")
    fetches = requests_made(driver)
    print(f"\n/redoc loaded {len(fetches)} URLs: {[f.url[:80] for f in fetches]}")
    assert any(f.url.endswith("/docs-assets/redoc.standalone.js") for f in fetches)
    # ReDoc always reaches for the Redocly logo on its CDN; the page's CSP stops it in the
    # browser. Anything else from another origin, blocked or not, is a failure.
    assert foreign_requests(fetches, field_service.base_url) == [Fetch(REDOCLY_LOGO, "csp")]
    assert console_errors(driver, allowed=(f"Loading the image '{REDOCLY_LOGO}' violates",)) == []


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_stay_behind_the_api_key(driver, keyed_service, path, stopwatch):
    driver.get(keyed_service.base_url + path)
    body = driver.find_element(By.TAG_NAME, "body").text
    stopwatch.lap(f"{path} without a key")
    assert '"unauthorized"' in body
    console_errors(driver)  # the 401 itself is logged; nothing else to check here
