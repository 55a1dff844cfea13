"""Statistics of a soak run: latency summaries with a max, RSS drift, CPU from samples.

Percentiles come from :mod:`benchmarks.serving.stats` (numpy's linear method), so figures of
the two benchmarks are computed alike.
"""

from __future__ import annotations

from collections.abc import Sequence

from benchmarks.serving.stats import percentile


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def summarise_latency(latencies_s: Sequence[float]) -> dict[str, float | int | None]:
    """Seconds -> count and p50/p95/p99/max/mean in ms; None figures when nothing was measured."""
    if not latencies_s:
        return dict.fromkeys(("p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms"), None) | {
            "count": 0
        }
    ms = [v * 1000.0 for v in latencies_s]
    return {
        "count": len(ms),
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
        "mean_ms": sum(ms) / len(ms),
    }


def drift_windows(span_s: float, warmup_s: float, window_s: float) -> tuple[float, float]:
    """(warm-up, window) that fit a run of ``span_s``: short trial runs get shrunken ones.

    The nominal figure is "median of the last minute minus median of the first minute after
    warm-up"; a run shorter than warm-up + 2 minutes gets two windows that split what is left.
    """
    warmup = min(warmup_s, span_s / 6)
    return warmup, max(0.0, min(window_s, (span_s - warmup) / 2))


def rss_drift(
    samples: Sequence[tuple[float, int]], warmup_s: float = 30.0, window_s: float = 60.0
) -> dict | None:
    """RSS drift over ``samples`` of (seconds since start, bytes): last window's median minus
    the first window's after warm-up, in MB; None with fewer than 2 samples in a window."""
    if not samples:
        return None
    t0, t_end = samples[0][0], samples[-1][0]
    warmup, window = drift_windows(t_end - t0, warmup_s, window_s)
    first = [rss for t, rss in samples if t0 + warmup <= t <= t0 + warmup + window]
    last = [rss for t, rss in samples if t >= t_end - window]
    if len(first) < 2 or len(last) < 2:
        return None
    first_mb, last_mb = median(first) / 1e6, median(last) / 1e6
    return {
        "warmup_s": round(warmup, 2),
        "window_s": round(window, 2),
        "first_median_mb": round(first_mb, 1),
        "last_median_mb": round(last_mb, 1),
        "drift_mb": round(last_mb - first_mb, 1),
        "samples_first": len(first),
        "samples_last": len(last),
    }


def cores(cpu_s: float, wall_s: float) -> float:
    """Average cores busy over a window: 2.0 means both cores of a 2-core box."""
    return cpu_s / wall_s if wall_s > 0 else 0.0
