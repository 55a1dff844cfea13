"""The page against a service started with ``INVASIVE_API_KEY``: it asks for the key, refuses a
wrong one, works with the right one and remembers it across reloads until told to forget it."""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.chrome import axe_violations, console_errors, skip_without_chromium
from tests.browser.test_field_resilience import STAND_IN

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
    driver.execute_script("localStorage.clear()")  # an earlier test's key, same origin
    driver.refresh()
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


def test_a_photo_sent_without_the_key_asks_for_it_and_goes_once_it_is_given(
    driver, keyed_service, api_key, photos, stopwatch
):
    driver.get(keyed_service.base_url + "/")
    driver.execute_script("localStorage.clear()")  # an earlier test's key, same origin
    driver.refresh()
    WebDriverWait(driver, WAIT_S).until(lambda d: visible(d, "key-form"))
    driver.find_element(By.ID, "pick").send_keys(str(photos["plot-18.jpg"]))
    item = WebDriverWait(driver, WAIT_S).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#results > li:not(.pending)")
    )
    stopwatch.lap("photo refused without a key")
    assert item.get_attribute("data-error") == "unauthorized"
    assert "needs a valid API key" in item.text and "Send again" in item.text
    assert visible(driver, "key-form")

    submit_key(driver, api_key)  # the photo refused for want of it goes again by itself
    WebDriverWait(driver, WAIT_S).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#results > li").get_attribute("data-label")
    )
    stopwatch.lap("key given: the photo sent again")
    assert item.get_attribute("data-label") == "not_invasive"
    assert console_errors(driver, allowed=(UNAUTHORIZED_LOAD,)) == []


def test_a_key_is_never_saved_unchecked_and_a_401_after_an_outage_asks_for_it(
    driver, keyed_service, api_key, stopwatch
):
    driver.get(keyed_service.base_url + "/")
    driver.execute_script("localStorage.clear()")  # an earlier test's key, same origin
    driver.refresh()
    WebDriverWait(driver, WAIT_S).until(lambda d: visible(d, "key-form"))
    driver.execute_script(STAND_IN, [])
    driver.execute_script("window.__offline = true")
    submit_key(driver, "typed-while-offline")
    WebDriverWait(driver, WAIT_S).until(
        lambda d: "Cannot reach the service to check the key" in d.find_element(
            By.ID, "key-message").text
    )
    assert stored_key(driver) is None, "a key nobody checked is not remembered"
    stopwatch.lap("offline: the key is not saved")

    driver.execute_script("window.__offline = false")
    submit_key(driver, api_key)
    WebDriverWait(driver, WAIT_S).until(
        lambda d: d.find_element(By.ID, "model").get_attribute("data-model-id")
    )
    driver.execute_script("window.__offline = true")
    driver.find_element(By.ID, "forget-key").click()  # the service is away meanwhile
    WebDriverWait(driver, WAIT_S).until(
        lambda d: "Cannot reach" in d.find_element(By.ID, "model").text
    )
    assert not visible(driver, "key-form")
    driver.execute_script("window.__offline = false")
    WebDriverWait(driver, WAIT_S).until(lambda d: visible(d, "key-form"))  # its next look: 401
    stopwatch.lap("back: asks for the key")
    assert "needs an API key" in driver.find_element(By.ID, "key-message").text
    assert console_errors(driver, allowed=(UNAUTHORIZED_LOAD, "Failed to fetch")) == []
