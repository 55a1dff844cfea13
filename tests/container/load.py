"""A bounded load loop through the proxy: a few clients sending photos back to back, counting
every answer, until told to stop or a request/time bound is reached (whichever comes first)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    failures: Counter = field(default_factory=Counter)  # "503 at_capacity", "ReadError", ...
    model_ids: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"{self.sent} requests in {self.seconds:.0f} s, {self.ok} ok, "
                f"{sum(self.failures.values())} failed {dict(self.failures)}, "
                f"model_ids {dict(self.model_ids)}")


class LoadLoop:
    """``clients`` threads POSTing ``photo`` to ``url`` until ``stop()``, ``max_requests`` or
    ``max_seconds``."""

    def __init__(self, url: str, photo: bytes, *, clients: int = 4, max_requests: int = 20_000,
                 max_seconds: float = 600) -> None:
        self.url, self.photo = url, photo
        self.clients, self.max_requests, self.max_seconds = clients, max_requests, max_seconds
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._start = 0.0

    def __enter__(self) -> LoadLoop:
        self._start = time.monotonic()
        self._threads = [threading.Thread(target=self._client, daemon=True)
                         for _ in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        """Stop sending; returns once every request in flight has its answer."""
        self._stop.set()
        return self.wait()

    def wait(self) -> LoadResult:
        """Return once the request or time bound is reached and every answer is in."""
        for thread in self._threads:
            thread.join(timeout=self.max_seconds + 120)
        self.result.seconds = time.monotonic() - self._start
        return self.result

    def _take_slot(self) -> bool:
        with self._lock:
            if (self._stop.is_set() or self.result.sent >= self.max_requests
                    or time.monotonic() - self._start > self.max_seconds):
                return False
            self.result.sent += 1
            return True

    def _client(self) -> None:
        with httpx.Client(timeout=60) as client:
            while self._take_slot():
                outcome, model_id = self._one(client)
                with self._lock:
                    if outcome == "ok":
                        self.result.ok += 1
                        self.result.model_ids[model_id] += 1
                    else:
                        self.result.failures[outcome] += 1

    def _one(self, client: httpx.Client) -> tuple[str, str]:
        try:
            answer = client.post(self.url, files={"file": ("plot.jpg", self.photo, "image/jpeg")})
        except httpx.HTTPError as exc:
            return type(exc).__name__, ""
        if answer.status_code != 200:
            try:
                code = answer.json().get("error", {}).get("code", "")
            except ValueError:
                code = answer.text[:60]
            return f"{answer.status_code} {code}".strip(), ""
        return "ok", answer.json()["model_id"]
