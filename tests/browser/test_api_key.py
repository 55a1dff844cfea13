"""The page against a service started with ``INVASIVE_API_KEY``: it asks for the key, refuses a
wrong one, works with the right one and remembers it across reloads until told to forget it."""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.chrome import axe_violations, console_errors, skip_without_chromium

skip_without_chromium()

WAIT_S = 30
# The browser logs every 401 answer as a failed resource load: expected in this flow only.
UNAUTHORIZED_LOAD = "status of 401"


def stored_key(driver) -> str | None:
    return driver.execute_script("return localStorage.getItem('invasive.apiKey')")


def visible(driver, element_id: str) -> bool:
    return driver.find_element(By.ID, element_id).is_displayed()


def submit_key(driver, key: str) -> None:
    field = driver.find_element(By.ID, "api-key")
    field.clear()
    field.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()


def test_api_key_is_asked_for_checked_remembered_and_forgotten(
    driver, keyed_service, api_key, photos, stopwatch
):
    driver.get(keyed_service.base_url + "/")
    WebDriverWait(driver, WAIT_S).until(lambda d: visible(d, "key-form"))
    stopwatch.lap("open page, 401 from /v1/model")
    assert "needs an API key" in driver.find_element(By.ID, "key-message").text
    assert driver.find_element(By.CSS_SELECTOR, "label[for=api-key]").text == "API key"
    serious = [v for v in axe_violations(driver) if v["impact"] in ("serious", "critical")]
    assert serious == [], serious
    stopwatch.lap("axe on the key form")

    submit_key(driver, "not-the-key")
    WebDriverWait(driver, WAIT_S).until(
        lambda d: "not accepted" in d.find_element(By.ID, "key-message").text
    )
    assert visible(driver, "key-form")
    assert stored_key(driver) is None, "a refused key is not remembered"
    assert driver.find_element(By.ID, "model").get_attribute("data-model-id") is None
    stopwatch.lap("wrong key refused")

    submit_key(driver, api_key)
    WebDriverWait(driver, WAIT_S).until(
        lambda d: d.find_element(By.ID, "model").get_attribute("data-model-id")
    )
    assert not visible(driver, "key-form")
    assert visible(driver, "key-saved")
    assert stored_key(driver) == api_key
    stopwatch.lap("right key accepted")

    driver.find_element(By.ID, "camera").send_keys(str(photos["plot-17.jpg"]))
    item = WebDriverWait(driver, WAIT_S).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#results > li:not(.pending)")
    )
    assert item.get_attribute("data-label") == "invasive"
    stopwatch.lap("photo with the key")

    driver.refresh()
    WebDriverWait(driver, WAIT_S).until(
        lambda d: d.find_element(By.ID, "model").get_attribute("data-model-id")
    )
    assert not visible(driver, "key-form"), "the key was remembered across the reload"
    assert visible(driver, "key-saved")
    stopwatch.lap("reload remembers the key")

    driver.find_element(By.ID, "forget-key").click()
    WebDriverWait(driver, WAIT_S).until(lambda d: visible(d, "key-form"))
    assert stored_key(driver) is None
    assert "forgotten" in driver.find_element(By.ID, "status").text
    stopwatch.lap("forget key")

    errors = console_errors(driver, allowed=(UNAUTHORIZED_LOAD,))
    assert errors == []


def test_a_photo_sent_without_the_key_asks_for_it(driver, keyed_service, photos, stopwatch):
    driver.get(keyed_service.base_url + "/")
    WebDriverWait(driver, WAIT_S).until(lambda d: visible(d, "key-form"))
    driver.find_element(By.ID, "pick").send_keys(str(photos["plot-18.jpg"]))
    item = WebDriverWait(driver, WAIT_S).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#results > li:not(.pending)")
    )
    stopwatch.lap("photo refused without a key")
    assert item.get_attribute("data-error") == "unauthorized"
    assert "needs a valid API key" in item.text
    assert visible(driver, "key-form")
    assert console_errors(driver, allowed=(UNAUTHORIZED_LOAD,)) == []
