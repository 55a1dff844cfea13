"""Which answers are fair under overload and which are violations, and how they are counted."""

import pytest

from benchmarks.soak.outcomes import (
    BACKPRESSURE,
    MAX_EXAMPLES,
    OK,
    REJECTED,
    VIOLATION,
    Result,
    classify,
    costliest_served,
    count_by_kind,
    per_second,
    phase_summary,
    violations,
)


@pytest.mark.parametrize(
    "kind, status, retry_after, transport, items, expected",
    [
        ("photo", 200, False, None, (), OK),
        ("phone", 200, False, None, (), OK),
        ("photo", 503, True, None, (), BACKPRESSURE),
        ("hostile", 503, True, None, (), BACKPRESSURE),
        ("photo", 503, False, None, (), VIOLATION),  # 503 without Retry-After
        ("photo", 500, False, None, (), VIOLATION),
        ("expensive", 502, False, None, (), VIOLATION),
        ("photo", 422, False, None, (), VIOLATION),  # an ordinary photo refused
        ("batch4", 413, False, None, (), VIOLATION),
        ("expensive", 413, False, None, (), REJECTED),
        ("expensive", 422, False, None, (), REJECTED),
        ("expensive", 200, False, None, (), OK),  # costly but valid: served is fine
        ("hostile", 422, False, None, (), REJECTED),
        ("hostile", 415, False, None, (), REJECTED),
        ("hostile", 200, False, None, (), OK),  # some are costly valid images: counted only
        ("photo", None, False, "ReadTimeout", (), VIOLATION),
        ("hostile", None, False, "ConnectionResetError", (), VIOLATION),
        ("batch4", 200, False, None, (200, 200, 200, 200), OK),
        ("batch4", 200, False, None, (200, 422, 200, 200), VIOLATION),  # ordinary file refused
        ("batch4", 200, False, None, (200, 500, 200, 200), VIOLATION),
        ("photo", 301, False, None, (), VIOLATION),
    ],
)
def test_classify(kind, status, retry_after, transport, items, expected):
    category, reason = classify(kind, status, retry_after, transport, items)
    assert category == expected
    assert (reason is not None) == (expected == VIOLATION)


def test_violation_reasons_say_what_happened():
    assert classify("photo", 503)[1] == "503 without Retry-After"
    assert "ReadTimeout" in classify("photo", None, transport_error="ReadTimeout")[1]
    assert classify("phone", 422)[1] == "422 on ordinary phone"


def result(kind="photo", t=0.0, status=200, code=None, latency=0.02, images=1) -> Result:
    category, reason = classify(
        kind, status, retry_after=True, transport_error=code if status is None else None
    )
    return Result(
        kind,
        f"{kind}.jpg",
        t,
        latency,
        status,
        code,
        category,
        reason,
        images if category == OK else 0,
    )


def test_count_by_kind_keys_statuses_with_their_error_codes():
    counts = count_by_kind(
        [
            result("photo"),
            result("photo"),
            result("photo", status=503, code="queue_full"),
            result("hostile", status=422, code="corrupt_image"),
            result("photo", status=None, code="ReadTimeout"),
        ]
    )
    assert counts["photo"]["requests"] == 4
    assert counts["photo"]["statuses"] == {
        "200": 2,
        "503 queue_full": 1,
        "transport ReadTimeout": 1,
    }
    assert counts["photo"]["categories"] == {OK: 2, REJECTED: 0, BACKPRESSURE: 1, VIOLATION: 1}
    assert counts["hostile"]["categories"][REJECTED] == 1


def test_violations_are_counted_by_reason_and_examples_are_capped_in_send_order():
    bad = [result("photo", t=float(100 - i), status=500) for i in range(MAX_EXAMPLES + 10)]
    v = violations([result(), *bad])
    assert v["count"] == MAX_EXAMPLES + 10
    assert v["by_reason"] == {"unexpected status 500": MAX_EXAMPLES + 10}
    assert len(v["examples"]) == MAX_EXAMPLES
    assert v["examples"][0]["t_s"] == 100 - (MAX_EXAMPLES + 9)


def test_per_second_buckets_by_send_time_and_counts_overflow():
    rows = per_second(
        [result(t=0.2), result(t=0.9, status=503), result(t=1.5, status=500), result(t=2.9)],
        duration_s=3,
        overflow_times=[1.1, 1.2, 7.0],  # past the end: folded into the last second
        inflight_max={1: 17},
    )
    assert [r["sent"] for r in rows] == [2, 1, 1]
    assert rows[0][OK] == 1 and rows[0][BACKPRESSURE] == 1
    assert rows[1][VIOLATION] == 1 and rows[1]["overflow"] == 2 and rows[1]["inflight_max"] == 17
    assert rows[2]["overflow"] == 1


def test_phase_summary_counts_batch_images_and_ordinary_latency_only_for_single_photos():
    results = [
        result("photo", latency=0.010),
        result("phone", latency=0.030),
        result("batch4", latency=0.500, images=4),
        result("photo", status=503, latency=0.001),
    ]
    s = phase_summary(results, wall_s=2.0, ordinary_kinds=("photo", "phone"))
    assert s["images_ok"] == 6 and s["images_per_s"] == 3.0
    assert s["ordinary_ok_latency_ms"]["count"] == 2
    assert s["ordinary_ok_latency_ms"]["max_ms"] == pytest.approx(30.0)
    assert s["retry_after"] == {"with_retry_after": 1, "without_retry_after": 0}
    assert s["violations"]["count"] == 0


def test_costliest_served_picks_the_slowest_answers_whatever_their_status():
    def probe(name: str, status: int, latency: float) -> Result:
        category, reason = classify("expensive", status, True)
        return Result("expensive", name, 0.0, latency, status, None, category, reason)

    probes = [
        probe("refused_fast", 413, 0.005),
        probe("served_slow", 200, 3.0),
        probe("timed_out", 422, 9.0),  # decode_timeout: the service decoded for 9 s
        probe("served_fast", 200, 0.5),
        probe("served_slow", 200, 2.0),  # probed twice: named once
    ]
    assert costliest_served(probes, 2) == ["timed_out", "served_slow"]
    assert costliest_served(probes, 9) == [
        "timed_out",
        "served_slow",
        "served_fast",
        "refused_fast",
    ]
    assert costliest_served([], 2) == []
