"""Headless Chromium driven by Selenium, with nothing downloaded and nothing off this machine.

Debian's ``chromium`` and ``chromium-driver`` packages (``apt-get install chromium
chromium-driver``; CI's ``.ci/run`` installs them) are used by explicit path, so Selenium Manager
never looks for (or downloads) a browser or driver. The browser resolves no host name but
127.0.0.1 (``--host-resolver-rules``), so a page that reaches for a CDN fails visibly, and the
performance log lets tests list every request the page made.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("INVASIVE_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("INVASIVE_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
AXE_JS = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"

PHONE = (360, 780)
DESKTOP = (1280, 800)


def missing_reason() -> str | None:
    """Why the browser tests cannot run here, in one line, or None."""
    absent = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not (p.exists() or shutil.which(p))]
    if absent:
        return (
            f"no headless browser: {', '.join(absent)} missing "
            "(apt-get install chromium chromium-driver)"
        )
    return None



def skip_without_chromium() -> None:
    """Called by each browser test module as it is collected: without a browser the module is
    skipped, and pytest folds the skips (same place, same reason) into one line."""
    reason = missing_reason()
    if reason:
        pytest.skip(reason, allow_module_level=True)


def start_chromium():
    """A headless Chromium session (desktop size), with browser and performance logs."""
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager: never download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
        # Nothing but this machine: any other host name fails to resolve.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER))
    return webdriver.Chrome(service=service, options=options)


def set_viewport(driver, size: tuple[int, int], mobile: bool) -> None:
    """Emulate a viewport of ``size`` CSS px (``mobile``: phone viewport rules, touch)."""
    width, height = size
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )
    driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": mobile})


def reset(driver) -> None:
    """Back to a blank desktop page with the logs drained, before each test."""
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": False})
    driver.get("about:blank")
    driver.get_log("browser")
    driver.get_log("performance")


def console_errors(driver, allowed: tuple[str, ...] = ()) -> list[str]:
    """SEVERE browser-log messages since the last call, less those containing an ``allowed``."""
    errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    return [message for message in errors if not any(a in message for a in allowed)]


@dataclass(frozen=True)
class Fetch:
    """One request the page made; ``blocked`` is Chrome's reason when it never left (e.g. csp)."""

    url: str
    blocked: str | None = None


def requests_made(driver) -> list[Fetch]:
    """Every request the browser made since the last call (from the performance log)."""
    urls: dict[str, str] = {}
    blocked: dict[str, str] = {}
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message.get("method") == "Network.requestWillBeSent":
            urls[params["requestId"]] = params["request"]["url"]
        elif message.get("method") == "Network.loadingFailed" and params.get("blockedReason"):
            blocked[params["requestId"]] = params["blockedReason"]
    return [Fetch(url, blocked.get(request_id)) for request_id, url in urls.items()]


def foreign_requests(fetches: list[Fetch], base_url: str) -> list[Fetch]:
    """The requests in ``fetches`` for anything but ``base_url`` (blob: and data: stay in the
    page), whether or not the browser blocked them."""
    return [f for f in fetches if not f.url.startswith((base_url + "/", "blob:", "data:"))]


def axe_violations(driver) -> list[dict]:
    """Run axe-core (vendored, injected into the page) and return its violations."""
    driver.execute_script(AXE_JS.read_text(encoding="utf-8"))
    result = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        axe.run(document, {resultTypes: ["violations"]})
          .then((r) => done(r.violations.map((v) => ({
              id: v.id, impact: v.impact, help: v.help,
              targets: v.nodes.map((n) => n.target.join(" ")).slice(0, 5)}))))
          .catch((e) => done([
              {id: "axe-error", impact: "critical", help: String(e), targets: []}]));
        """
    )
    return result


@dataclass
class Stopwatch:
    """Where a test's time goes: ``lap("what")`` after each phase, ``report()`` at the end."""

    name: str
    laps: list[tuple[str, float]] = field(default_factory=list)
    _last: float = field(default_factory=time.perf_counter)

    def lap(self, what: str) -> None:
        now = time.perf_counter()
        self.laps.append((what, now - self._last))
        self._last = now

    def report(self) -> str:
        total = sum(seconds for _, seconds in self.laps)
        parts = ", ".join(f"{what} {seconds:.2f}s" for what, seconds in self.laps)
        return f"[{self.name}] {total:.2f}s: {parts}"
