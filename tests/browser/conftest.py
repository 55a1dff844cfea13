"""Fixtures for the browser tests: one headless Chromium for the session, the real service as a
process (``tests.hostile.server``) on the session's demo checkpoint, and test photos.

Every fixture prints how long it took to set up, and every test prints where its own time went
(run with ``-s`` to see them).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.browser.chrome import Stopwatch, reset, start_chromium
from tests.hostile.server import RunningService, running_service

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "examples" / "photos"

# Small and quick to start: warm-up runs batch sizes up to 4 only.
SERVICE_SETTINGS = {"max_batch_size": "4", "decode_processes": "1", "log_level": "warning"}
API_KEY = "field-crew-key-7f3a"


@pytest.fixture(scope="session")
def browser() -> Iterator:
    """One headless Chromium for the whole session (each service has its own origin, so
    localStorage never leaks between tests that use different services)."""
    started = time.perf_counter()
    driver = start_chromium()
    print(f"\n[browser] chromium + chromedriver started in {time.perf_counter() - started:.2f}s")
    yield driver
    driver.quit()


@pytest.fixture
def driver(browser):
    """The session's browser, reset to a blank desktop-sized page with drained logs."""
    reset(browser)
    return browser


@pytest.fixture
def stopwatch(request) -> Iterator[Stopwatch]:
    watch = Stopwatch(request.node.name)
    yield watch
    print("\n" + watch.report())


def _start(checkpoint: Path, **settings: str) -> Iterator[RunningService]:
    started = time.perf_counter()
    with running_service(checkpoint, **SERVICE_SETTINGS, **settings) as service:
        keyed = " (with API key)" if "api_key" in settings else ""
        print(f"\n[service] ready on {service.base_url}{keyed} in "
              f"{time.perf_counter() - started:.2f}s")
        yield service
        assert "Traceback" not in service.log(), service.log_tail()


@pytest.fixture(scope="session")
def field_service(demo_checkpoint: Path) -> Iterator[RunningService]:
    """The service, no API key: the page and /v1 open to all."""
    yield from _start(demo_checkpoint)


@pytest.fixture(scope="session")
def api_key() -> str:
    return API_KEY


@pytest.fixture(scope="session")
def keyed_service(demo_checkpoint: Path, api_key: str) -> Iterator[RunningService]:
    """The service with ``INVASIVE_API_KEY`` set (docs behind the key too)."""
    yield from _start(demo_checkpoint, api_key=api_key)


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The README's sample photos, plus a large phone-sized photo whose EXIF says "rotate 90°"."""
    from training.demo import make_demo_photo

    folder = tmp_path_factory.mktemp("browser-photos")
    small = make_demo_photo(True, np.random.default_rng(23))
    large = small.resize((2000, 1500), Image.Resampling.BICUBIC)  # landscape pixels...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...shown rotated 90° clockwise: a portrait photo, as phones store them
    large_path = folder / "IMG_2000x1500_rotated.jpg"
    large.save(large_path, "JPEG", quality=92, exif=exif.tobytes())
    samples = {name: SAMPLES / name for name in ("plot-17.jpg", "plot-18.jpg", "notes.txt")}
    for path in samples.values():
        assert path.is_file(), f"{path} missing: run `make samples`"
    return {"large_rotated": large_path, **samples}


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("browser-screenshots")
    print(f"\n[screenshots] {folder}")
    return folder
