"""The field page when things go wrong in the field: a busy service, no connection, files over
the service's limits, transparent or unusual images. Nothing a user chose is lost: a photo that
could not be checked for a passing reason is kept and sent again.

The busy and offline answers are played by a stand-in for ``fetch`` installed in the page (the
real service answers everything else), so each test knows exactly which answer came when.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.chrome import console_errors, skip_without_chromium
from tests.browser.conftest import _start
from tests.browser.test_field_page import open_page

skip_without_chromium()

WAIT_S = 30

# Answers for the page's next /v1/predict* calls ("503", "offline"; then the real service), and
# a log of the calls: [url, answer, files sent]. window.__offline fails every call while true.
STAND_IN = """
window.__plan = arguments[0];
window.__calls = [];
window.__offline = false;
const realFetch = window.fetch.bind(window);
window.fetch = (url, options) => {
  const u = String(url);
  const offline = () => Promise.reject(new TypeError("Failed to fetch"));
  if (window.__offline) return offline();
  if (u.includes("v1/predict")) {
    const answer = window.__plan.shift() || "real";
    const body = options.body;
    window.__calls.push([u, answer, body.getAll("files").length + body.getAll("file").length]);
    if (answer === "offline") return offline();
    if (answer === "503") {
      const error = { error: { code: "at_capacity", message: "the memory budget is in use" } };
      return Promise.resolve(new Response(JSON.stringify(error), {
        status: 503, headers: { "Retry-After": "1", "Content-Type": "application/json" },
      }));
    }
  }
  return realFetch(url, options);
};
"""

# Chromium logs every 4xx/5xx and failed load as a console error: expected here.
EXPECTED_LOADS = ("status of 413", "status of 415", "Failed to fetch", "ERR_")


def calls(driver) -> list:
    return driver.execute_script("return window.__calls")


def item_named(driver, name: str):
    for item in driver.find_elements(By.CSS_SELECTOR, "#results > li"):
        if item.find_element(By.CLASS_NAME, "file-name").text == name:
            return item
    raise AssertionError(f"no result for {name}")


def wait_for_answers(driver, count: int) -> list:
    """The first ``count`` result items once each has its final answer: not on its way and
    not waiting to be sent again."""

    def answered(d):
        items = d.find_elements(By.CSS_SELECTOR, "#results > li")[:count]
        classes = [i.get_attribute("class") for i in items]
        done = len(items) == count and not any("pending" in c or "waiting" in c for c in classes)
        return items if done else False

    return WebDriverWait(driver, WAIT_S).until(answered)


def test_a_busy_answer_is_sent_again_by_itself(driver, field_service, photos, stopwatch):
    open_page(driver, field_service)
    driver.execute_script(STAND_IN, ["503"])
    driver.find_element(By.ID, "camera").send_keys(str(photos["plot-17.jpg"]))
    WebDriverWait(driver, WAIT_S).until(
        lambda d: "waiting" in item_named(d, "plot-17.jpg").get_attribute("class")
    )
    waiting_text = item_named(driver, "plot-17.jpg").text
    stopwatch.lap("503: kept")
    (item,) = wait_for_answers(driver, 1)
    stopwatch.lap("sent again after Retry-After")
    assert "busy" in waiting_text and "Send again" in waiting_text
    assert item.get_attribute("data-label") == "invasive"
    assert "failed" not in item.get_attribute("class") and "Send again" not in item.text
    assert [answer for _, answer, _ in calls(driver)] == ["503", "real"]
    assert driver.find_element(By.ID, "status").text.startswith("plot-17.jpg: Invasive")
    assert console_errors(driver) == []


def test_without_a_connection_photos_are_kept_and_sent_once_the_service_answers(
    driver, field_service, photos, stopwatch
):
    open_page(driver, field_service)
    driver.execute_script(STAND_IN, [])
    driver.execute_script("window.__offline = true")
    chosen = [photos["plot-17.jpg"], photos["plot-18.jpg"]]
    driver.find_element(By.ID, "pick").send_keys("\n".join(str(p) for p in chosen))
    WebDriverWait(driver, WAIT_S).until(
        lambda d: "waiting to be sent again" in d.find_element(By.ID, "status").text
    )
    item = item_named(driver, "plot-18.jpg")
    assert "Could not reach the service" in item.text and "not sent" in item.text
    assert item.get_attribute("data-sent-bytes") == "0"
    assert driver.find_element(By.ID, "status").text == (
        "0 photos checked, 2 waiting to be sent again."
    )
    WebDriverWait(driver, WAIT_S).until(  # the page keeps asking the service in the meantime
        lambda d: "waiting will be sent" in d.find_element(By.ID, "model").text
    )
    stopwatch.lap("offline: both kept")
    driver.execute_script("window.__offline = false")
    items = wait_for_answers(driver, 2)
    stopwatch.lap("back online: sent by themselves")
    assert {i.get_attribute("data-label") for i in items} == {"invasive", "not_invasive"}
    assert driver.find_element(By.ID, "status").text == "2 photos checked."
    assert "Model:" in driver.find_element(By.ID, "model").text


def test_send_again_button_resends_one_photo(driver, field_service, photos, stopwatch):
    open_page(driver, field_service)
    driver.execute_script(STAND_IN, ["offline"])
    driver.find_element(By.ID, "camera").send_keys(str(photos["plot-18.jpg"]))
    button = WebDriverWait(driver, WAIT_S).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#results > li .retry")
    )
    assert button.text == "Send again" and button.tag_name == "button"
    button.click()
    (item,) = wait_for_answers(driver, 1)
    stopwatch.lap("offline, then Send again")
    assert item.get_attribute("data-label") == "not_invasive"
    assert [answer for _, answer, _ in calls(driver)][:2] == ["offline", "real"]


def noise_png(side: int) -> bytes:
    pixels = np.random.default_rng(5).integers(0, 255, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def limited_service(demo_checkpoint):
    """Two files a batch, 300 KB a file."""
    yield from _start(demo_checkpoint, max_batch_files="2", max_upload_bytes="300000")


def test_selections_are_split_to_the_batch_limit_and_an_oversized_file_is_told_here(
    driver, limited_service, photos, tmp_path, stopwatch
):
    big = tmp_path / "noise.png"  # 1000 px: sent as it is, and 3 MB
    big.write_bytes(noise_png(1000))
    open_page(driver, limited_service)
    driver.execute_script(STAND_IN, [])
    chosen = [photos["plot-17.jpg"], big, photos["notes.txt"], photos["plot-18.jpg"]]
    driver.find_element(By.ID, "pick").send_keys("\n".join(str(p) for p in chosen))
    items = wait_for_answers(driver, 4)
    stopwatch.lap("4 files, 2 per batch, one too large")
    by_name = {i.find_element(By.CLASS_NAME, "file-name").text: i for i in items}
    assert by_name["plot-17.jpg"].get_attribute("data-label") == "invasive"
    assert by_name["plot-18.jpg"].get_attribute("data-label") == "not_invasive"
    assert by_name["notes.txt"].get_attribute("data-error") == "unsupported_media_type"
    too_large = by_name["noise.png"]
    assert too_large.get_attribute("data-error") == "too_large_to_send"
    assert "too large to send" in too_large.text and "293 KB" in too_large.text
    assert "not sent" in too_large.text and "Send again" not in too_large.text
    assert [files for _, _, files in calls(driver)] == [2, 1], "batches of at most 2"
    assert driver.find_element(By.ID, "status").text == "4 photos checked, 2 could not be read."


def test_a_batch_over_a_proxy_s_body_limit_is_sent_one_photo_at_a_time(
    driver, field_service, photos, stopwatch
):
    open_page(driver, field_service)
    driver.execute_script(STAND_IN, [])
    driver.execute_script(  # a proxy in front with a smaller body limit than the service's
        "const inner = window.fetch; window.fetch = (url, options) => "
        "String(url).endsWith('v1/predict/batch') ? Promise.resolve(new Response("
        "'<html>413 Request Entity Too Large</html>', {status: 413})) : inner(url, options);"
    )
    chosen = [photos["plot-17.jpg"], photos["plot-18.jpg"]]
    driver.find_element(By.ID, "pick").send_keys("\n".join(str(p) for p in chosen))
    items = wait_for_answers(driver, 2)
    stopwatch.lap("413 from the proxy, then one by one")
    assert {i.get_attribute("data-label") for i in items} == {"invasive", "not_invasive"}
    assert [files for _, _, files in calls(driver)] == [1, 1]


def test_transparency_becomes_white_and_formats_the_service_lacks_are_reencoded(
    driver, field_service, tmp_path, stopwatch
):
    rgba = np.zeros((1500, 2000, 4), dtype=np.uint8)
    rgba[:, 1000:] = (40, 120, 40, 255)  # right half opaque green, left half transparent
    transparent = tmp_path / "transparent.png"
    Image.fromarray(rgba, "RGBA").save(transparent)
    icon = tmp_path / "plant.ico"  # Chromium decodes ICO; the service does not read it
    Image.fromarray(np.full((64, 64, 3), (40, 120, 40), dtype=np.uint8)).save(icon)
    open_page(driver, field_service)
    driver.find_element(By.ID, "pick").send_keys(f"{transparent}\n{icon}")
    items = wait_for_answers(driver, 2)
    stopwatch.lap("transparent PNG + ICO")
    by_name = {i.find_element(By.CLASS_NAME, "file-name").text: i for i in items}
    assert by_name["plant.ico"].get_attribute("data-label"), by_name["plant.ico"].text
    thumb = by_name["transparent.png"].find_element(By.CSS_SELECTOR, "img.thumb")
    left, right = driver.execute_script(
        """const img = arguments[0];
        const canvas = document.createElement("canvas");
        canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        const context = canvas.getContext("2d");
        context.drawImage(img, 0, 0);
        const at = (x) => Array.from(context.getImageData(x, canvas.height / 2, 1, 1).data);
        return [at(canvas.width / 4), at(3 * canvas.width / 4)];""",
        thumb,
    )
    assert min(left[:3]) >= 245, f"the transparent half was sent as {left}, not white"
    assert right[1] > right[0] + 40, right
