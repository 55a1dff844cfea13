import pytest

from benchmarks.serving.stats import latency_summary_ms, percentile, ratio


def test_percentile_interpolates_like_numpy_linear():
    values = [15.0, 20.0, 35.0, 40.0, 50.0]
    # numpy.percentile(values, q) for these q, computed by hand: rank = (n-1) * q / 100
    assert percentile(values, 0) == 15.0
    assert percentile(values, 100) == 50.0
    assert percentile(values, 50) == 35.0
    assert percentile(values, 40) == pytest.approx(29.0)  # rank 1.6: 20 + 0.6 * 15
    assert percentile(values, 99) == pytest.approx(49.6)  # rank 3.96: 40 + 0.96 * 10


def test_percentile_ignores_input_order_and_handles_one_value():
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([7.0], 99) == 7.0


@pytest.mark.parametrize("values, q", [([], 50), ([1.0], -1), ([1.0], 100.5)])
def test_percentile_rejects_bad_input(values, q):
    with pytest.raises(ValueError):
        percentile(values, q)


def test_latency_summary_converts_seconds_to_ms():
    summary = latency_summary_ms([0.010] * 98 + [0.100, 0.200])
    assert summary["p50_ms"] == pytest.approx(10.0)
    assert summary["p99_ms"] == pytest.approx(101.0)  # rank 98.01 between 100 and 200 ms
    assert summary["mean_ms"] == pytest.approx((0.98 + 0.3) * 1000 / 100)


def test_ratio_is_none_when_a_side_is_missing_or_zero():
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(None, 2.0) is None
    assert ratio(3.0, None) is None
    assert ratio(3.0, 0.0) is None
