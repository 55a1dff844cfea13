"""The field page at ``/`` in a real headless Chromium against the real service process."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.chrome import (
    DESKTOP,
    PHONE,
    axe_violations,
    console_errors,
    foreign_requests,
    requests_made,
    set_viewport,
    skip_without_chromium,
)

skip_without_chromium()

WAIT_S = 30
REPO = Path(__file__).resolve().parents[2]


def open_page(driver, service) -> dict:
    """Load ``/`` and wait until it shows the model; return /v1/model as the service says it."""
    driver.get(service.base_url + "/")
    WebDriverWait(driver, WAIT_S).until(
        lambda d: d.find_element(By.ID, "model").get_attribute("data-model-id")
    )
    return driver.execute_async_script(
        "const done = arguments[0]; fetch('v1/model').then((r) => r.json()).then(done);"
    )


def wait_for_results(driver, count: int) -> list:
    """The first ``count`` result items, once none of them is pending."""

    def finished(d):
        items = d.find_elements(By.CSS_SELECTOR, "#results > li")
        if len(items) < count:
            return False
        items = items[:count]
        return items if all("pending" not in i.get_attribute("class") for i in items) else False

    return WebDriverWait(driver, WAIT_S).until(finished)


def reference_probability(checkpoint: Path, photo: Path) -> float:
    """The checkpoint's probability for ``photo`` scored offline (no service, no browser)."""
    import torch

    from model.inference import Classifier
    from model.preprocessing import prepare_input

    torch.set_num_threads(1)
    classifier = Classifier.from_checkpoint(checkpoint, device="cpu", precision="fp32")
    probabilities = classifier.predict_probabilities(
        prepare_input(photo.read_bytes(), classifier.spec)[None]
    )[0]
    return float(probabilities[classifier.metadata.class_names.index("invasive")])


def test_one_photo_is_shrunk_upright_and_shows_label_and_probability(
    driver, field_service, photos, demo_checkpoint, stopwatch
):
    info = open_page(driver, field_service)
    stopwatch.lap("open page + /v1/model")
    model_line = driver.find_element(By.ID, "model").text
    assert info["model_id"] in model_line
    assert info["demo"] is True and "demo checkpoint" in model_line

    original = photos["large_rotated"]
    driver.find_element(By.ID, "camera").send_keys(str(original))
    (item,) = wait_for_results(driver, 1)
    stopwatch.lap("shrink + upload + result")

    label = item.get_attribute("data-label")
    probability = float(item.get_attribute("data-probability"))
    expected = reference_probability(demo_checkpoint, original)
    stopwatch.lap("offline reference")
    print(f"\npage: {label} {probability:.3f}; offline on the original: {expected:.3f}")
    assert label == ("invasive" if expected >= info["threshold"] else "not_invasive")
    assert abs(probability - expected) < 0.1, "the shrunk upload scores like the original"
    text = item.text
    assert label.replace("_", " ").capitalize() in text
    assert f"{round(probability * 100)}%" in text
    assert f"threshold {round(info['threshold'] * 100)}%" in text
    assert original.name in text

    # The bar is drawn to the probability, with the mark at the threshold.
    bar = item.find_element(By.CLASS_NAME, "bar")
    fill = item.find_element(By.CLASS_NAME, "bar-fill")
    mark = item.find_element(By.CLASS_NAME, "bar-mark")
    width = bar.rect["width"] - 2  # inside its 1px borders
    assert abs(fill.rect["width"] - probability * width) <= 2
    mark_centre = mark.rect["x"] + mark.rect["width"] / 2 - bar.rect["x"] - 1
    assert abs(mark_centre - info["threshold"] * width) <= 2

    # 2000x1500 pixels with EXIF "rotate 90°": sent upright and smaller, long side 1024.
    thumb = item.find_element(By.CSS_SELECTOR, "img.thumb")
    natural = driver.execute_script(
        "return [arguments[0].naturalWidth, arguments[0].naturalHeight]", thumb
    )
    assert natural == [768, 1024]
    sent = int(item.get_attribute("data-sent-bytes"))
    assert sent < original.stat().st_size
    assert int(item.get_attribute("data-elapsed-ms")) >= 0 and " sent" in text
    print(f"sent {sent} bytes instead of {original.stat().st_size}")

    assert console_errors(driver) == []
    assert foreign_requests(requests_made(driver), field_service.base_url) == []
    stopwatch.lap("checks")


def test_batch_shows_a_non_image_error_in_plain_words_beside_the_other_results(
    driver, field_service, photos, stopwatch
):
    open_page(driver, field_service)
    stopwatch.lap("open page")
    chosen = [photos["plot-17.jpg"], photos["notes.txt"], photos["plot-18.jpg"]]
    driver.find_element(By.ID, "pick").send_keys("\n".join(str(p) for p in chosen))
    items = wait_for_results(driver, 3)
    stopwatch.lap("batch upload + results")

    by_name = {item.find_element(By.CLASS_NAME, "file-name").text: item for item in items}
    assert set(by_name) == {p.name for p in chosen}
    notes = by_name["notes.txt"]
    assert notes.get_attribute("data-error") == "unsupported_media_type"
    assert "not a photo the service can read" in notes.text
    assert "unsupported_media_type" in notes.text  # the service's own code, for support calls
    assert "no preview" in notes.text
    assert by_name["plot-17.jpg"].get_attribute("data-label") == "invasive"
    assert by_name["plot-18.jpg"].get_attribute("data-label") == "not_invasive"
    status = driver.find_element(By.ID, "status").text
    assert status == "3 photos checked, 1 could not be read."

    urls = [f.url for f in requests_made(driver)]
    assert any(u.endswith("/v1/predict/batch") for u in urls), "several photos: one batch call"
    assert not any(u.endswith("/v1/predict") for u in urls)
    assert console_errors(driver) == []
    stopwatch.lap("checks")


def test_accessibility_has_no_serious_or_critical_axe_violations(
    driver, field_service, photos, stopwatch
):
    open_page(driver, field_service)
    driver.find_element(By.ID, "pick").send_keys(
        "\n".join(str(photos[n]) for n in ("plot-17.jpg", "notes.txt"))
    )
    wait_for_results(driver, 2)
    stopwatch.lap("page with results")
    for size, mobile in ((DESKTOP, False), (PHONE, True)):
        set_viewport(driver, size, mobile)
        violations = axe_violations(driver)
        for v in violations:
            print(f"\naxe {size[0]}px: {v['impact']} {v['id']}: {v['help']} {v['targets']}")
        serious = [v for v in violations if v["impact"] in ("serious", "critical")]
        assert serious == [], serious
    stopwatch.lap("axe-core, desktop and phone")

    # The results region is announced, and every control has a real label.
    assert driver.find_element(By.ID, "results").get_attribute("aria-live") == "polite"
    assert driver.find_element(By.ID, "status").get_attribute("role") == "status"
    for input_id in ("camera", "pick"):
        label = driver.find_element(By.CSS_SELECTOR, f"label[for={input_id}]")
        assert label.text in ("Take photo", "Choose photos")
    assert console_errors(driver) == []


def test_keyboard_reaches_both_photo_buttons_with_a_visible_focus_ring(
    driver, field_service, stopwatch
):
    open_page(driver, field_service)
    reached = []
    for _ in range(6):  # header and key form are empty or hidden: the buttons come early
        ActionChains(driver).send_keys(Keys.TAB).perform()
        focused = driver.switch_to.active_element
        if focused.get_attribute("type") == "file":
            input_id = focused.get_attribute("id")
            label = driver.find_element(By.CSS_SELECTOR, f"label[for={input_id}]")
            outline = driver.execute_script(
                "const s = getComputedStyle(arguments[0]); return [s.outlineStyle, s.outlineWidth]",
                label,
            )
            reached.append((input_id, outline))
            if len(reached) == 2:
                break
    stopwatch.lap("tab through the page")
    print(f"\nfocused: {reached}")
    assert [r[0] for r in reached] == ["camera", "pick"]
    for _, (style, width) in reached:
        assert style == "solid" and float(width.rstrip("px")) >= 2


def test_phone_and_desktop_layouts_and_screenshots(
    driver, field_service, photos, screenshot_dir, stopwatch
):
    """360x780 phone: no horizontal scroll, big photo buttons at the bottom. Screenshots of
    both sizes go to the printed folder; with INVASIVE_SCREENSHOTS_DIR=docs they also replace
    the README's (docs/field-page-phone.png, docs/field-page-desktop.png)."""
    open_page(driver, field_service)
    driver.find_element(By.ID, "pick").send_keys(
        "\n".join(str(photos[n]) for n in ("plot-18.jpg", "notes.txt", "plot-17.jpg"))
    )
    wait_for_results(driver, 3)
    stopwatch.lap("page with results")
    copy_to = os.environ.get("INVASIVE_SCREENSHOTS_DIR")
    for name, size, mobile in (("phone", PHONE, True), ("desktop", DESKTOP, False)):
        set_viewport(driver, size, mobile)
        driver.execute_script("window.scrollTo(0, 0)")
        layout = driver.execute_script(
            """
            const d = document.documentElement;
            const buttons = [...document.querySelectorAll('.actions .button')]
              .map((b) => b.getBoundingClientRect().toJSON());
            return {scrollWidth: d.scrollWidth, clientWidth: d.clientWidth,
                    innerHeight: window.innerHeight, buttons};
            """
        )
        assert layout["clientWidth"] == size[0]
        assert layout["scrollWidth"] <= layout["clientWidth"], f"{name}: horizontal scroll"
        assert len(layout["buttons"]) == 2
        for button in layout["buttons"]:
            assert button["height"] >= 48 and button["width"] >= 120, (name, button)
            assert layout["innerHeight"] - 100 <= button["top"], f"{name}: within thumb reach"
            assert button["bottom"] <= layout["innerHeight"]
            assert button["right"] <= size[0]
        path = screenshot_dir / f"field-page-{name}.png"
        assert driver.save_screenshot(str(path))
        print(f"\n{name} screenshot: {path}")
        if copy_to:
            shutil.copyfile(path, REPO / copy_to / path.name)
        stopwatch.lap(f"{name} layout + screenshot")
    assert console_errors(driver) == []
