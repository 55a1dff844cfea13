"""Latency summaries and RSS drift: the soak's figures, computed by hand here."""

import pytest

from benchmarks.soak.stats import cores, drift_windows, rss_drift, summarise_latency


def test_latency_summary_has_max_and_count_in_ms():
    s = summarise_latency([0.010] * 98 + [0.100, 0.200])
    assert s["count"] == 100
    assert s["p50_ms"] == pytest.approx(10.0)
    assert s["p99_ms"] == pytest.approx(101.0)  # rank 98.01 between 100 and 200 ms
    assert s["max_ms"] == pytest.approx(200.0)


def test_latency_summary_of_nothing_is_none_not_an_error():
    s = summarise_latency([])
    assert s["count"] == 0
    assert s["p99_ms"] is None and s["max_ms"] is None


def test_drift_windows_are_nominal_on_a_long_run_and_shrink_on_a_short_one():
    assert drift_windows(600, 30, 60) == (30, 60)
    warmup, window = drift_windows(20, 30, 60)
    assert warmup == pytest.approx(20 / 6)
    assert window == pytest.approx((20 - 20 / 6) / 2)


def test_rss_drift_is_last_minute_median_minus_first_minute_after_warmup():
    # 10 min at 1 Hz: 500 MB during warm-up, then 1000 MB, rising to 1100 MB in the last minute.
    samples = [
        (float(t), (500 if t < 30 else 1100 if t >= 540 else 1000) * 10**6) for t in range(601)
    ]
    d = rss_drift(samples, warmup_s=30, window_s=60)
    assert d["first_median_mb"] == 1000.0
    assert d["last_median_mb"] == 1100.0
    assert d["drift_mb"] == 100.0
    assert d["samples_first"] == 61 and d["samples_last"] == 61


def test_rss_drift_needs_samples_in_both_windows():
    assert rss_drift([]) is None
    assert rss_drift([(0.0, 1)]) is None


def test_cores_is_cpu_over_wall():
    assert cores(3.0, 2.0) == 1.5
    assert cores(1.0, 0.0) == 0.0
