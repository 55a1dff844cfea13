"""soak.md from a results dict shaped like the runner's: the figures a reader pastes."""

import pytest

from benchmarks.soak.outcomes import OK, Result, classify, phase_summary
from benchmarks.soak.report import latency_text, render_markdown, status_text
from benchmarks.soak.runner import total_violations

ORDINARY = ("photo", "phone")


def results_of(*specs: tuple[str, int | None, str | None, float]) -> list[Result]:
    out = []
    for i, (kind, status, code, latency) in enumerate(specs):
        category, reason = classify(kind, status, True, code if status is None else None)
        out.append(
            Result(
                kind,
                "f",
                i * 0.1,
                latency,
                status,
                code,
                category,
                reason,
                1 if category == OK else 0,
            )
        )
    return out


@pytest.fixture()
def results() -> dict:
    unloaded = phase_summary(results_of(*[("photo", 200, None, 0.020)] * 100), 2.0, ORDINARY)
    loaded = phase_summary(results_of(*[("photo", 200, None, 0.030)] * 100), 3.0, ORDINARY)
    expensive = phase_summary(
        results_of(("expensive", 200, None, 4.0), ("expensive", 422, "decode_timeout", 5.0)),
        3.0,
        ORDINARY,
    )
    soak = phase_summary(
        results_of(
            ("photo", 200, None, 0.05),
            ("photo", 503, "queue_full", 0.001),
            ("hostile", 422, "image_too_complex", 0.01),
            ("photo", 500, "internal", 0.2),
        ),
        20.0,
        ORDINARY,
    )
    resources = {
        "server_rss_mb_start": 900.0,
        "server_rss_mb_peak": 1400.0,
        "server_cpu_cores": 1.7,
        "client_cpu_cores": 0.05,
        "other_cpu_cores": 0.1,
    }
    soak |= {
        "rate_per_s": 240.0,
        "rate_factor": 2.0,
        "duration_s": 20.0,
        "client_overflow": 3,
        "liveness": {
            "probes": 20,
            "failed": 0,
            "latency_ms": {"count": 20, "p99_ms": 4.0, "max_ms": 5.0},
        },
        "resources": resources,
    }
    capacity = phase_summary(results_of(*[("photo", 200, None, 0.1)] * 240), 2.0, ORDINARY)
    r = {
        "meta": {
            "date": "2026-11-27T08:00:00+00:00",
            "revision": "abc123",
            "command": "x",
            "cpu_model": "AMD EPYC",
            "nproc": 2,
            "load_average_before": [0.1, 0.2, 0.3],
            "client": "http1",
            "event_loop": "uvloop",
        },
        "config": {"seed": 8, "max_inflight": 512},
        "server": {"env": {}, "cold_start_s": 4.2, "alive_at_end": True},
        "phases": {
            "warmup": phase_summary([], 1.0, ORDINARY),
            "capacity": capacity | {"concurrency": 16},
            "starvation": {
                "unloaded": unloaded,
                "loaded": loaded,
                "expensive": expensive,
                "expensive_files": ["png16", "jpeg50mp"],
                "p99_ratio": 1.5,
                "p50_ratio": 1.5,
                "target": 2.0,
                "verdict": "PASS",
            },
            "soak": soak,
        },
        "resources": {"soak_rss_drift": {"drift_mb": 12.5, "window_s": 60, "warmup_s": 30}},
    }
    r["violations"] = total_violations(r)
    return r


def test_total_violations_gathers_every_phase_and_a_dead_server(results):
    assert results["violations"]["count"] == 1
    assert results["violations"]["by_reason"] == {"soak: unexpected status 500": 1}
    results["server"]["alive_at_end"] = False
    results["phases"]["soak"]["liveness"]["failed"] = 2
    again = total_violations(results)
    assert again["count"] == 4
    assert again["by_reason"]["server process died"] == 1


def test_markdown_has_the_acceptance_figures(results):
    md = render_markdown(results)
    assert "**120.0 img/s**" in md  # capacity: 240 answers in 2 s
    assert "**1.50** (target <= 2: PASS)" in md
    assert "20.0 / 20.0 ms (n=100)" in md  # unloaded p50 / p99
    assert "200 x1, 422 decode_timeout x1" in md  # what the expensive files got
    assert "240.0 req/s (2x capacity, seed 8)" in md
    assert "+12.5 MB" in md
    assert "1.70 / 0.05 / 0.10" in md  # server / client / other CPU
    assert "| photo | 3 | 1 | 0 | 1 | 1 | " in md  # per-kind row
    assert "- soak: unexpected status 500: 1" in md
    assert "| all | **violations** | **1** |" in md


def test_markdown_has_the_server_s_give_way_count_when_it_has_one(results):
    assert "gave way" not in render_markdown(results)  # a revision without the counter
    results["server"]["counters"] = {"invasive_memory_budget_gave_way_total": 1234.0}
    assert "| all | server: requests that gave way (503, wait for each other) | 1,234 |" in (
        render_markdown(results)
    )


def test_markdown_without_a_soak_phase_says_why(results):
    results["phases"]["soak"] = {"error": "no capacity measured"}
    results["violations"] = total_violations(results)
    md = render_markdown(results)
    assert "Overload phase not run: no capacity measured" in md
    assert results["violations"]["by_reason"] == {"soak: no capacity measured": 1}


def test_status_text_is_biggest_first_and_capped():
    assert status_text({"200": 5, "503 queue_full": 9}) == "503 queue_full x9, 200 x5"
    many = {str(400 + i): 1 for i in range(8)}
    assert status_text(many, limit=3).endswith("+5 more")
    assert status_text({}) == "-"


def test_latency_text_handles_no_answers():
    assert latency_text({"count": 0}) == "no answers"
    assert latency_text(None) == "no answers"
    assert latency_text({"count": 3, "p50_ms": 1.0, "p99_ms": 2.25}) == "1.0 / 2.2 ms (n=3)"
