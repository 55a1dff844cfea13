"""benchmarks/gpu_decode.py on a CPU: the --dry-run path end to end, and its failure handling."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks import gpu_decode
from benchmarks.serving.fixtures import DEFAULT_PHOTO_DIR
from model.preprocessing import PreprocessSpec

# torchvision 0.29 deprecates its decoders in favour of TorchCodec; the device has 0.26
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")

needs_photos = pytest.mark.skipif(
    not (DEFAULT_PHOTO_DIR.is_dir() and any(DEFAULT_PHOTO_DIR.glob("*.jpg"))),
    reason=f"the shared benchmark photos are not here ({DEFAULT_PHOTO_DIR})",
)


def _read(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def test_results_go_to_the_device_out_folder_when_set():
    assert gpu_decode.default_out({"OUT": "/out"}) == Path("/out/gpu-decode")
    assert gpu_decode.default_out({}) == Path("benchmarks/results/gpu-decode")


def test_real_run_settings_fit_the_time_box():
    args = gpu_decode.parse_args(["--out", "o", "--photos", "p"])
    assert args.batch_sizes == [16, 64] and args.seconds == 3.0 and args.count == 16
    assert args.phone_size == (4032, 3024) and args.input_size == 224
    assert 2 * 2 * len(args.batch_sizes) * args.seconds <= 30  # kinds x paths x batches
    dry = gpu_decode.parse_args(["--dry-run", "--out", "o"])
    assert dry.batch_sizes == [2, 4] and dry.seconds <= 0.5 and dry.count == 4


@needs_photos
def test_dry_run_measures_both_paths_and_their_parity(tmp_path, capsys):
    assert gpu_decode.main(["--dry-run", "--out", str(tmp_path)]) == 0
    result = _read(tmp_path)
    assert result["dry_run"] and result["device"] == "cpu" and not result["errors"]
    assert [p["count"] for p in result["payloads"]] == [4, 4]
    rows = result["rows"]
    assert {(r["path"], r["batch"]) for r in rows} == {
        (path, b) for path in ("cpu", "gpu") for b in (2, 4)
    }
    assert len(rows) == 8
    for row in rows:
        assert row["images_per_s"] > 0 and row["cpu_ms_per_image"] > 0
        assert row["batches"] >= 3 and row["images"] == row["batches"] * row["batch"]
    for name, p in result["parity"].items():
        assert name.startswith(("photo-", "phone-1008x756"))
        # different decoders and resamplers, but the same picture
        assert 0 <= p["gpu_vs_cpu"]["mean_abs"] < 5
        assert p["gpu_vs_cpu_without_draft"]["mean_abs"] < 2
    md = (tmp_path / "results.md").read_text()
    assert "--dry-run" in md and "| phone-1008x756 | gpu | 4 |" in md
    assert md in capsys.readouterr().out


def test_gpu_path_matches_the_cpu_path_shape_and_type():
    pixels = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    buf = BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG")
    data = buf.getvalue()
    gpu = gpu_decode.gpu_batch([bytearray(data)] * 3, 32, "cpu")
    with ThreadPoolExecutor(2) as pool:
        cpu = gpu_decode.cpu_batch([data] * 3, PreprocessSpec(input_size=32), pool, "cpu")
    assert gpu.shape == cpu.shape == (3, 3, 32, 32)
    assert gpu.dtype == cpu.dtype == torch.uint8


@needs_photos
def test_a_failing_gpu_decoder_is_recorded_and_the_cpu_rows_kept(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("nvjpeg is not available in this build")

    monkeypatch.setattr(gpu_decode, "gpu_batch", broken)
    assert gpu_decode.main(["--dry-run", "--count", "2", "--out", str(tmp_path)]) == 1
    result = _read(tmp_path)
    by_path = {path: [r for r in result["rows"] if r["path"] == path] for path in ("cpu", "gpu")}
    assert len(by_path["cpu"]) == len(by_path["gpu"]) == 4
    assert all("error" not in r and r["images_per_s"] > 0 for r in by_path["cpu"])
    assert all("nvjpeg is not available" in r["error"] for r in by_path["gpu"])
    assert all("error" in p for p in result["parity"].values())
    assert "failed: RuntimeError: nvjpeg" in (tmp_path / "results.md").read_text()


def test_without_cuda_a_real_run_exits_2_and_says_why(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_decode.main(["--out", str(tmp_path)]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert "CUDA is not available" in _read(tmp_path)["errors"][0]


def test_missing_photos_are_reported_in_the_results(tmp_path):
    code = gpu_decode.main(["--dry-run", "--photos", str(tmp_path / "none"), "--out",
                            str(tmp_path / "out")])
    assert code == 1
    assert "no benchmark photos" in _read(tmp_path / "out")["errors"][0]
