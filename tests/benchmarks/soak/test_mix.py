"""The open loop's schedule: reproducible from its seed, Poisson in rate, mixed as asked."""

import pytest

from benchmarks.soak.mix import (
    DEFAULT_MIX,
    KINDS,
    kind_counts,
    normalise_mix,
    parse_mix,
    poisson_schedule,
)


def test_default_mix_is_mostly_ordinary_photos_and_sums_to_one():
    assert sum(DEFAULT_MIX.values()) == pytest.approx(1.0)
    assert DEFAULT_MIX["photo"] + DEFAULT_MIX["phone"] == pytest.approx(0.85)
    assert {k: DEFAULT_MIX[k] for k in ("batch4", "expensive", "hostile")} == pytest.approx(
        {"batch4": 0.05, "expensive": 0.05, "hostile": 0.05}
    )


def test_parse_mix_normalises_and_fills_missing_kinds_with_zero():
    mix = parse_mix("photo=3, hostile=1")
    assert mix == pytest.approx(
        {"photo": 0.75, "phone": 0, "batch4": 0, "expensive": 0, "hostile": 0.25}
    )
    assert list(mix) == list(KINDS)


@pytest.mark.parametrize(
    "text, message",
    [
        ("photo", "KIND=WEIGHT"),
        ("photo=x", "not a number"),
        ("cat=1", "unknown kinds"),
        ("photo=-1,phone=2", ">= 0"),
        ("photo=0", "sum to zero"),
    ],
)
def test_parse_mix_rejects_bad_text_with_a_reason(text, message):
    with pytest.raises(ValueError, match=message):
        parse_mix(text)


def test_schedule_is_reproducible_from_its_seed_and_differs_across_seeds():
    a = poisson_schedule(100, 5, DEFAULT_MIX, seed=1, max_count=10_000)
    b = poisson_schedule(100, 5, DEFAULT_MIX, seed=1, max_count=10_000)
    c = poisson_schedule(100, 5, DEFAULT_MIX, seed=2, max_count=10_000)
    assert a == b
    assert a != c


def test_schedule_has_the_asked_rate_ordered_times_within_the_duration():
    arrivals = poisson_schedule(200, 50, DEFAULT_MIX, seed=8, max_count=100_000)
    # Poisson count over 50 s at 200/s: mean 10,000, sd 100; 5 sd either side.
    assert 9_500 < len(arrivals) < 10_500
    times = [a.t for a in arrivals]
    assert times == sorted(times)
    assert times[0] > 0 and times[-1] < 50
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    # Exponential gaps: mean 1/rate, and about e^-1 of them longer than the mean.
    assert sum(gaps) / len(gaps) == pytest.approx(1 / 200, rel=0.05)
    assert sum(g > 1 / 200 for g in gaps) / len(gaps) == pytest.approx(0.368, abs=0.03)


def test_schedule_kinds_follow_the_mix_and_skip_zero_weights():
    mix = normalise_mix({"photo": 0.8, "hostile": 0.2})
    counts = kind_counts(poisson_schedule(500, 20, mix, seed=3, max_count=100_000))
    total = sum(counts.values())
    assert counts["photo"] / total == pytest.approx(0.8, abs=0.02)
    assert counts["hostile"] / total == pytest.approx(0.2, abs=0.02)
    assert counts["phone"] == counts["batch4"] == counts["expensive"] == 0


def test_schedule_is_bounded_in_count_and_rejects_a_zero_rate():
    assert len(poisson_schedule(1e6, 60, DEFAULT_MIX, seed=0, max_count=1000)) == 1000
    with pytest.raises(ValueError):
        poisson_schedule(0, 10, DEFAULT_MIX, seed=0, max_count=10)
