import io

import pytest
from PIL import Image

from benchmarks.serving.ceiling import measure_ceiling
from benchmarks.serving.fixtures import build_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    ckpt = build_checkpoint(tmp_path_factory.mktemp("c") / "c.safetensors", "resnet18", 32)
    images = []
    for i in range(3):
        out = io.BytesIO()
        Image.new("RGB", (64, 48), (60 * i, 100, 30)).save(out, format="JPEG")
        images.append(out.getvalue())
    return ckpt, images


@pytest.mark.parametrize("decode_threads", [1, 2])
def test_ceiling_reports_every_batch_size_and_picks_the_fastest(tiny, decode_threads):
    ckpt, images = tiny
    result = measure_ceiling(ckpt, images, (1, 4), 0.05, "cpu", "fp32", decode_threads)
    rows = result["by_batch_size"]
    assert [r["batch_size"] for r in rows] == [1, 4]
    assert all(r["images"] >= 3 * r["batch_size"] for r in rows)  # at least 3 batches each
    assert result["images_per_s"] == max(r["images_per_s"] for r in rows)
    assert result["best_batch_size"] in (1, 4)
    single = result["single_image_latency"]
    assert 0 < single["p50_ms"] <= single["p99_ms"]
    assert result["decode_threads"] == decode_threads
    assert result["precision"] == "fp32"


def test_parallel_loops_are_measured_and_can_win(tiny):
    ckpt, images = tiny
    result = measure_ceiling(ckpt, images, (1, 4), 0.05, "cpu", "fp32", 1, parallel_loops=(1, 2))
    rows = result["by_batch_size"]
    assert [(r["batch_size"], r["loops"]) for r in rows] == [(1, 1), (4, 1), (4, 2)]
    two = rows[-1]
    assert two["images"] >= 2 * 3 * 4  # both loops ran at least 3 batches of 4
    assert result["images_per_s"] == max(r["images_per_s"] for r in rows)
    assert result["best_loops"] in (1, 2)


def test_device_decoding_rows_join_and_the_lone_latency_is_the_best_of_both(tiny):
    ckpt, images = tiny
    result = measure_ceiling(ckpt, images, (1, 4), 0.05, "cpu", "fp32", 1, decode_on_device=True)
    rows = result["by_batch_size"]
    assert [(r["batch_size"], r["decode"]) for r in rows] == [
        (1, "cpu"), (4, "cpu"), (1, "device"), (4, "device")
    ]
    best = max(rows, key=lambda r: r["images_per_s"])
    assert result["best_decode"] == best["decode"]
    lone = min(r["batch_latency"]["p50_ms"] for r in rows if r["batch_size"] == 1)
    assert result["single_image_latency"]["p50_ms"] == lone


def test_the_ceiling_runs_the_engine_asked_for(tiny, tmp_path):
    ckpt, images = tiny
    result = measure_ceiling(
        ckpt, images, (1, 4), 0.05, "cpu", "fp32", 1, parallel_loops=(1, 2),
        engine="openvino", cache_dir=tmp_path,
    )
    assert result["engine"] == "openvino"
    assert [(r["batch_size"], r["loops"]) for r in result["by_batch_size"]] == [
        (1, 1), (4, 1), (4, 2)
    ]


def test_auto_resolves_as_the_service_does(tiny, tmp_path):
    from model.engines import resolve_engine
    from model.inference import resolve_device

    ckpt, images = tiny
    result = measure_ceiling(
        ckpt, images, (1,), 0.05, "cpu", "fp32", engine="auto", cache_dir=tmp_path
    )
    assert result["engine"] == resolve_engine("auto", resolve_device("cpu"))
