"""``invasive-train predict/evaluate --engine``: offline scoring can use the service's engines;
the default stays eager, so offline scores are exactly what they were."""

from __future__ import annotations

import csv
import importlib.util

import pytest

from training.cli import build_parser, main


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_engine_flag_defaults_to_eager(command):
    args = ["--checkpoint", "c", "--output", "o"]
    args += ["--images", "i"] if command == "predict" else ["--data", "d"]
    assert build_parser().parse_args([command, *args]).engine == "eager"
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, *args, "--engine", "tensorrt"])


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="no onnxruntime")
def test_predict_with_onnxruntime_matches_eager(demo_checkpoint, kaggle_data, tmp_path,
                                                monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # not the user's cache
    common = ["predict", "--checkpoint", str(demo_checkpoint), "--images",
              str(kaggle_data / "train"), "--precision", "fp32", "--workers", "1"]
    assert main([*common, "--output", str(tmp_path / "eager.csv")]) == 0
    assert main([*common, "--output", str(tmp_path / "ort.csv"), "--engine", "onnxruntime"]) == 0
    assert "running eager PyTorch instead" not in capsys.readouterr().err
    assert list((tmp_path / "cache" / "invasive-species" / "engines").iterdir())

    def scores(name: str) -> dict[str, float]:
        rows = csv.DictReader((tmp_path / name).open())
        return {row["name"]: float(row["invasive"]) for row in rows}

    eager, ort = scores("eager.csv"), scores("ort.csv")
    assert eager.keys() == ort.keys() and len(eager) == 16
    assert max(abs(eager[k] - ort[k]) for k in eager) <= 1e-4
