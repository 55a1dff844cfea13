"""One request's outcome, how it is judged, and the counts a phase is reported by.

The service may answer an overload only in three ways: a 2xx, a 4xx that names what is wrong
with a bad file, or a 503 with Retry-After. Everything else is a *violation*: a 5xx other than
503, a 503 without Retry-After, any 4xx on an ordinary photo, a transport error or a timeout.
Which exact answer each hostile file must get is the hostile suite's business
(tests/hostile); some of them are valid, costly images the service may serve, so a 2xx on a
hostile file is counted, not judged. Pure functions over plain records, so the rules are
testable.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from benchmarks.soak.mix import BAD_INPUT_KINDS
from benchmarks.soak.stats import summarise_latency

OK, REJECTED, BACKPRESSURE, VIOLATION = "ok", "rejected", "backpressure", "violation"
CATEGORIES = (OK, REJECTED, BACKPRESSURE, VIOLATION)
MAX_EXAMPLES = 50  # violations kept in full in the report; the rest are only counted


@dataclass(slots=True)
class Result:
    kind: str
    payload: str  # file name (or batch name) sent
    t_send: float  # seconds after the phase started
    latency_s: float
    status: int | None  # None: no HTTP answer (transport error, timeout)
    code: str | None  # error.code from the JSON body, or the transport error's name
    category: str
    reason: str | None = None  # why it is a violation
    images_ok: int = 0  # images that got a prediction (a batch counts each file)

    @property
    def status_key(self) -> str:
        if self.status is None:
            return f"transport {self.code}"
        return f"{self.status} {self.code}" if self.code else str(self.status)


def classify(
    kind: str,
    status: int | None,
    retry_after: bool = False,
    transport_error: str | None = None,
    item_statuses: Sequence[int] = (),
) -> tuple[str, str | None]:
    """(category, violation reason or None) for one answer to a request of ``kind``.

    ``item_statuses``: the per-file statuses of a 200 batch answer.
    """
    if transport_error is not None or status is None:
        return VIOLATION, f"transport error: {transport_error or 'no answer'}"
    if status == 503:
        if retry_after:
            return BACKPRESSURE, None
        return VIOLATION, "503 without Retry-After"
    if 200 <= status < 300:
        for item in item_statuses:
            if item >= 500 and item != 503:
                return VIOLATION, f"batch file answered {item}"
            if 400 <= item < 500 and kind not in BAD_INPUT_KINDS:
                return VIOLATION, f"batch file of ordinary photos answered {item}"
        return OK, None
    if 400 <= status < 500:
        if kind in BAD_INPUT_KINDS:
            return REJECTED, None
        return VIOLATION, f"{status} on ordinary {kind}"
    return VIOLATION, f"unexpected status {status}"


def count_by_kind(results: Iterable[Result]) -> dict[str, dict]:
    """Per kind: requests, categories and status+code counts, e.g. ``"422 corrupt_image": 3``."""
    kinds: dict[str, dict] = defaultdict(
        lambda: {"requests": 0, "categories": Counter(), "statuses": Counter()}
    )
    for r in results:
        entry = kinds[r.kind]
        entry["requests"] += 1
        entry["categories"][r.category] += 1
        entry["statuses"][r.status_key] += 1
    return {
        kind: {
            "requests": e["requests"],
            "categories": {c: e["categories"].get(c, 0) for c in CATEGORIES},
            "statuses": dict(sorted(e["statuses"].items())),
        }
        for kind, e in sorted(kinds.items())
    }


def violations(results: Iterable[Result]) -> dict:
    """Count by reason, and the first :data:`MAX_EXAMPLES` in full (in send order)."""
    bad = sorted((r for r in results if r.category == VIOLATION), key=lambda r: r.t_send)
    return {
        "count": len(bad),
        "by_reason": dict(Counter(r.reason or "?" for r in bad).most_common()),
        "examples": [
            {
                "t_s": round(r.t_send, 3),
                "kind": r.kind,
                "payload": r.payload,
                "status": r.status_key,
                "latency_ms": round(r.latency_s * 1000, 1),
                "reason": r.reason,
            }
            for r in bad[:MAX_EXAMPLES]
        ],
    }


def ok_latency(results: Iterable[Result], kinds: Iterable[str]) -> dict:
    """Latency summary of the admitted (2xx) requests of ``kinds``."""
    wanted = set(kinds)
    return summarise_latency(
        [r.latency_s for r in results if r.kind in wanted and r.category == OK]
    )


def retry_after_summary(results: Iterable[Result]) -> dict[str, int]:
    """503s with Retry-After (backpressure) and without (a violation), over all kinds."""
    backpressure = without = 0
    for r in results:
        if r.category == BACKPRESSURE:
            backpressure += 1
        elif r.status == 503:
            without += 1
    return {"with_retry_after": backpressure, "without_retry_after": without}


def per_second(
    results: Iterable[Result],
    duration_s: float,
    overflow_times: Iterable[float] = (),
    inflight_max: dict[int, int] | None = None,
) -> list[dict]:
    """One row per second of sending: requests sent that second and how they ended.

    Bucketed by send time, so a row shows what became of that second's arrivals, however long
    they took to answer. ``overflow``: arrivals the client could not send (in-flight bound).
    """
    seconds = max(1, int(duration_s + 0.999999))
    rows = [
        {"t": s, "sent": 0, **dict.fromkeys(CATEGORIES, 0), "overflow": 0, "inflight_max": 0}
        for s in range(seconds)
    ]

    def row(t: float) -> dict:
        return rows[min(max(0, int(t)), seconds - 1)]

    for r in results:
        entry = row(r.t_send)
        entry["sent"] += 1
        entry[r.category] += 1
    for t in overflow_times:
        row(t)["overflow"] += 1
    for s, n in (inflight_max or {}).items():
        row(s)["inflight_max"] = max(row(s)["inflight_max"], n)
    return rows


def costliest_served(probes: Iterable[Result], count: int = 2) -> list[str]:
    """Names of the ``count`` files that took the service longest to answer, one at a time on an
    idle server: what keeps its heavy lane busiest, whether it ends in a prediction or a
    decode_timeout. A file refused from its header in milliseconds would load nothing, so a
    fixed pick could measure nothing at all."""
    ranked = sorted(probes, key=lambda r: -r.latency_s)
    names: list[str] = []
    for r in ranked:
        if r.payload not in names:
            names.append(r.payload)
    return names[:count]


def phase_summary(results: Sequence[Result], wall_s: float, ordinary_kinds: Iterable[str]) -> dict:
    """The figures every phase reports: counts, throughput of admitted images, latencies."""
    images_ok = sum(r.images_ok for r in results)
    kinds = sorted({r.kind for r in results})
    return {
        "wall_s": round(wall_s, 3),
        "requests": len(results),
        "images_ok": images_ok,
        "images_per_s": images_ok / wall_s if wall_s > 0 else 0.0,
        "by_kind": count_by_kind(results),
        "ok_latency_ms": {k: ok_latency(results, [k]) for k in kinds},
        "ordinary_ok_latency_ms": ok_latency(results, ordinary_kinds),
        "all_latency_ms": summarise_latency([r.latency_s for r in results]),
        "retry_after": retry_after_summary(results),
        "violations": violations(results),
    }
