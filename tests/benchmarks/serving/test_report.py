import copy

import pytest

from benchmarks.serving.report import evaluate_targets, plot_results, render_markdown


def _cell(payload, c, ips, p50, p99, errors=0, rss=900.0):
    return {
        "payload": payload,
        "concurrency": c,
        "duration_s": 10.0,
        "requests": int(ips * 10),
        "images_per_s": ips,
        "errors": {"status": errors},
        "error_count": errors,
        "latency_ms": {"p50_ms": p50, "p95_ms": p99 * 0.9, "p99_ms": p99, "mean_ms": p50},
        "server_cpu_cores": 1.9,
        "peak_rss_mb": rss,
        "client_cpu_cores": 0.05,
    }


@pytest.fixture
def results():
    p = "photo-800x600"
    return {
        "meta": {
            "date": "2026-11-27T04:00:00+00:00",
            "machine": "2 cores of X",
            "command": "python -m benchmarks.serving run",
        },
        "config": {"concurrency": [1, 32], "duration_s": 10.0, "warmup_s": 2.0},
        "checkpoint": {"arch": "resnet18", "input_size": 224},
        "payloads": [{"name": p, "count": 16, "mean_bytes": 170000}],
        "ceiling": {
            p: {
                "images_per_s": 200.0,
                "best_batch_size": 16,
                "single_image_latency": {"p50_ms": 10.0, "p95_ms": 11.0, "p99_ms": 12.0},
            }
        },
        "servers": {
            "ours": {
                "notes": "invasive-api",
                "cold_start_s": 4.2,
                "cells": [_cell(p, 1, 90, 11.0, 14), _cell(p, 32, 180, 170, 250)],
            },
            "litserve": {
                "notes": "LitServe",
                "cold_start_s": 12.0,
                "cells": [_cell(p, 1, 60, 16, 20), _cell(p, 32, 125, 200, 300)],
            },
            "naive": {
                "notes": "naive",
                "cold_start_s": 3.0,
                "cells": [_cell(p, 1, 5, 200, 250), _cell(p, 32, 5, 6000, 9000)],
            },
        },
    }


def _verdicts(results):
    return {t.name: t for t in evaluate_targets(results)}


def test_targets_pass_and_miss_with_their_ratios(results):
    t = _verdicts(results)
    assert t["c=32 img/s vs ceiling"].measured == pytest.approx(0.9)
    assert t["c=32 img/s vs ceiling"].verdict == "PASS"
    assert t["c=32 img/s vs LitServe"].measured == pytest.approx(1.44)
    assert t["c=32 img/s vs LitServe"].verdict == "PASS"
    assert t["c=32 p99 vs LitServe p99"].measured == pytest.approx(250 / 300)
    assert t["c=32 img/s vs naive"].measured == pytest.approx(36.0)
    assert t["c=1 p50 vs ceiling single-image"].measured == pytest.approx(1.1)
    assert t["errors (non-2xx + socket)"].verdict == "PASS"
    assert t["server peak RSS (MB)"].verdict == "PASS"


def test_targets_miss(results):
    ours = results["servers"]["ours"]["cells"]
    ours[1].update(images_per_s=160.0, error_count=3, peak_rss_mb=1600.0)
    ours[1]["latency_ms"]["p99_ms"] = 301.0
    ours[0]["latency_ms"]["p50_ms"] = 12.6
    t = _verdicts(results)
    assert t["c=32 img/s vs ceiling"].verdict == "MISS"  # 0.80
    assert t["c=32 img/s vs LitServe"].verdict == "MISS"  # 1.28
    assert t["c=32 p99 vs LitServe p99"].verdict == "MISS"
    assert t["c=1 p50 vs ceiling single-image"].verdict == "MISS"  # 1.26
    assert t["errors (non-2xx + socket)"].measured == 3
    assert t["errors (non-2xx + socket)"].verdict == "MISS"
    assert t["server peak RSS (MB)"].verdict == "MISS"


def test_missing_baseline_is_not_a_pass(results):
    del results["servers"]["litserve"]
    t = _verdicts(results)
    assert t["c=32 img/s vs LitServe"].passed is None
    assert t["c=32 img/s vs LitServe"].verdict == "n/a"


def test_markdown_has_every_row_and_verdict(results):
    md = render_markdown(results, evaluate_targets(results))
    assert "| ceiling (in-process, batch 16; latency at batch 1) | - | 200.0 | 10.0 |" in md
    assert "| ours | 32 | 180.0 | 170.0 |" in md
    assert "| naive | 32 | 5.0 | 6,000.0 |" in md
    assert "| litserve | 12.00 | LitServe |" in md
    assert "| photo-800x600 | c=32 img/s vs naive | 36.00 | none (context) | n/a |" in md
    assert md.count("| PASS |") == 6


def test_markdown_shows_a_failed_server(results):
    failed = copy.deepcopy(results)
    failed["servers"]["litserve"] = {"notes": "", "cells": [], "error": "litserve is not installed"}
    md = render_markdown(failed, evaluate_targets(failed))
    assert "| litserve | - | failed: litserve is not installed |" in md


def test_chart_is_a_png(results, tmp_path):
    path = plot_results(results, tmp_path / "chart.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_cell_without_answers_shows_dashes_and_is_not_a_pass(results, tmp_path):
    cell = results["servers"]["ours"]["cells"][1]
    cell.update(images_per_s=0.0, requests=0)
    cell["latency_ms"] = dict.fromkeys(cell["latency_ms"])
    t = _verdicts(results)
    assert t["c=32 p99 vs LitServe p99"].verdict == "n/a"
    assert t["c=32 img/s vs ceiling"].verdict == "MISS"
    md = render_markdown(results, evaluate_targets(results))
    assert "| ours | 32 | 0.0 | - | - | - |" in md
    plot_results(results, tmp_path / "chart.png")


def test_a_busy_machine_is_flagged(results):
    quiet = render_markdown(results, evaluate_targets(results))
    assert "not quiet" not in quiet
    results["servers"]["litserve"]["cells"][0]["background_cpu_cores"] = 0.8
    noisy = render_markdown(results, evaluate_targets(results))
    assert "**Warning: the machine was not quiet** (other processes used up to 0.80 cores" in noisy


def test_markdown_shows_the_eager_ceiling_beside_the_best_engine(results):
    p = "photo-800x600"
    results["ceiling"][p]["engine"] = "openvino"
    results["ceiling_eager"] = {
        p: {
            "engine": "eager",
            "images_per_s": 150.0,
            "best_batch_size": 16,
            "single_image_latency": {"p50_ms": 16.0, "p95_ms": 17.0, "p99_ms": 18.0},
        }
    }
    md = render_markdown(results, evaluate_targets(results))
    assert "| ceiling (in-process, openvino, batch 16; latency at batch 1) | - | 200.0 |" in md
    assert "| eager ceiling (in-process, eager, batch 16; latency at batch 1) | - | 150.0 |" in md
    # the targets compare with the best engine's ceiling, not eager's
    assert _verdicts(results)["c=32 img/s vs ceiling"].measured == pytest.approx(0.9)


def test_gpu_runs_get_the_gpu_targets_for_every_server_of_ours(results):
    p = "photo-800x600"
    assert not any(t.name.startswith("GPU") for t in evaluate_targets(results))  # a CPU run
    results["ceiling"][p].update(device="cuda:0", images_per_s=1425.0)
    results["servers"]["ours-4proc"] = {
        "notes": "invasive-api INVASIVE_PROCESSES=4", "cold_start_s": 20.0,
        "cells": [_cell(p, 1, 90, 11.0, 14), _cell(p, 32, 3100.0, 30, 60)],
    }
    t = _verdicts(results)
    ours = t["GPU ours c=32 img/s vs ceiling"]
    assert ours.measured == pytest.approx(180 / 1425) and ours.verdict == "MISS"
    assert t["GPU ours c=32 uploads/s"].verdict == "MISS"
    assert t["GPU ours-4proc c=32 img/s vs ceiling"].verdict == "PASS"  # 2.18x
    assert t["GPU ours-4proc c=32 uploads/s"].measured == 3100.0
    assert t["GPU ours-4proc c=32 uploads/s"].verdict == "PASS"
    md = render_markdown(results, evaluate_targets(results))
    assert "| photo-800x600 | GPU ours-4proc c=32 uploads/s | 3,100.00 | >= 3,000 | PASS |" in md
