"""invasive-train starts cheaply: --help, --version and a wrong path never import torch.

Speed is shown by what is imported (a fact), not by timing a test: ``time invasive-train
--help`` took 6-15 s when the CLI imported torch and ~0.1 s after (README, Training).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from training import cli
from training.cli import build_parser, main

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchvision", "matplotlib", "sklearn")


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter; it prints the heavy modules it ended up importing."""
    probe = (f"{code}\nimport sys\n"
             f"print('HEAVY:', sorted(m for m in {HEAVY!r} if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120)


def heavy_imports(proc: subprocess.CompletedProcess) -> str:
    return next(line for line in proc.stdout.splitlines() if line.startswith("HEAVY:"))


def test_building_the_parser_imports_no_torch():
    proc = run_python("from training.cli import build_parser\nbuild_parser()")
    assert proc.returncode == 0, proc.stderr
    assert heavy_imports(proc) == "HEAVY: []"


@pytest.mark.parametrize("argv", [["--help"], ["fit", "--help"], ["evaluate", "--help"],
                                  ["predict", "--help"], ["eda", "--help"], ["--version"]],
                         ids=" ".join)
def test_help_and_version_import_no_torch(argv):
    code = ("import sys\nfrom training.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as exit:\n    assert not exit.code")
    proc = run_python(code, *argv)
    assert proc.returncode == 0, proc.stderr
    assert heavy_imports(proc) == "HEAVY: []"
    assert proc.stdout.startswith("usage: invasive-train" if argv != ["--version"]
                                  else "invasive-train ")


def test_python_dash_m_training_help_imports_no_torch():
    """``python -m training`` (training/__main__.py) loads torch's ``@record`` only under
    torchrun; -X importtime lists every module the interpreter imported."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "training", "fit", "--help"],
                          capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "training.cli" in imported
    assert not {m for m in imported if m.split(".")[0] in HEAVY}


def _evaluate(checkpoint: Path, data: Path, out: Path) -> list[str]:
    return ["evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--output", str(out)]


def _run_main(argv: list[str]) -> subprocess.CompletedProcess:
    return run_python("import sys\nfrom training.cli import main\ncode = main(sys.argv[1:])\n"
                      "print('EXIT:', code)", *argv)


def test_missing_checkpoint_is_reported_without_importing_torch(kaggle_data, tmp_path):
    proc = _run_main(_evaluate(tmp_path / "nope.safetensors", kaggle_data, tmp_path / "eval"))
    assert "EXIT: 2" in proc.stdout
    assert proc.stderr == f"error: checkpoint not found: {tmp_path / 'nope.safetensors'}\n"
    assert heavy_imports(proc) == "HEAVY: []"
    assert not (tmp_path / "eval").exists()


def test_missing_data_is_reported_without_importing_torch(demo_checkpoint, tmp_path):
    proc = _run_main(_evaluate(demo_checkpoint, tmp_path / "no-data", tmp_path / "eval"))
    assert "EXIT: 2" in proc.stdout
    assert proc.stderr.startswith(f"error: data directory not found: {tmp_path / 'no-data'}")
    assert heavy_imports(proc) == "HEAVY: []"
    proc = _run_main(["predict", "--checkpoint", str(demo_checkpoint), "--images",
                      str(tmp_path / "no-photos"), "--output", str(tmp_path / "s.csv")])
    assert proc.stderr.startswith(f"error: image folder not found: {tmp_path / 'no-photos'}")
    assert heavy_imports(proc) == "HEAVY: []"
    proc = _run_main(["fit", "--data", str(tmp_path / "no-data"), "--output",
                      str(tmp_path / "m.safetensors")])
    assert proc.stderr.startswith("error: data directory not found")
    assert heavy_imports(proc) == "HEAVY: []"


def test_unreadable_checkpoints_are_reported_without_importing_torch(kaggle_data, tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    text = tmp_path / "model.log.jsonl"
    text.write_text('{"event": "start"}\n')
    weights_only = tmp_path / "weights.safetensors"
    save_file({"w": np.zeros(2, dtype=np.float32)}, str(weights_only))
    cases = {text: "is not a readable checkpoint (corrupt or truncated safetensors file",
             weights_only: "is a safetensors file but not a checkpoint of this project",
             tmp_path: "is a folder; it must be a .safetensors file"}
    for path, message in cases.items():
        proc = _run_main(_evaluate(path, kaggle_data, tmp_path / "eval"))
        assert "EXIT: 2" in proc.stdout and message in proc.stderr, (path, proc.stderr)
        assert heavy_imports(proc) == "HEAVY: []"


def test_written_out_lists_match_the_modules_that_import_torch():
    from model.checkpoint import METADATA_KEY
    from model.engines import ENGINES
    from training import commands, preflight

    assert commands.ENGINES == ENGINES
    assert preflight.METADATA_KEY == METADATA_KEY


@pytest.mark.parametrize("env", [{}, {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"},
                                 {"RANK": "3"}])
def test_launch_rank_reads_what_distributed_reads(monkeypatch, env):
    from training.distributed import Launch

    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cli.launch_rank() == Launch.from_env().rank


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _option_blocks(help_text: str) -> list[str]:
    """The help text of each option: a line starting '  -', with its continuation lines."""
    blocks: list[str] = []
    for line in help_text.split("options:", 1)[1].splitlines():
        if line.startswith("  -"):
            blocks.append(line)
        elif blocks and line.startswith("   "):
            blocks[-1] += " " + line.strip()
    return blocks


@pytest.mark.parametrize("command", ["fit", "evaluate", "predict", "eda", "demo"])
def test_every_flag_has_help_and_one_default_at_most(command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    sub = _subparsers(build_parser())[command]
    for action in sub._actions:
        assert action.help, f"{command} {action.option_strings} has no help text"
    blocks = _option_blocks(sub.format_help())
    assert len(blocks) == len(sub._actions)
    for block in blocks:
        assert block.count("default") <= 1, block
        assert "(default: None)" not in block and "(default: False)" not in block, block


def test_defaults_are_shown_where_they_say_something(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    fit_help = " ".join(_subparsers(build_parser())["fit"].format_help().split())
    for shown in ("--epochs EPOCHS at most this many (default: 10 with pretrained weights, 20 with "
                  "--weights none)",
                  "--image-size IMAGE_SIZE model input side in pixels, stored in the checkpoint "
                  "(default: 224 with pretrained weights, 160 with --weights none)",
                  "--seed SEED split, init and shuffling (default: 0)",  # 0 is not "unset"
                  "--group-file CSV CSV with 'name' and the group column (default: the labels"):
        assert shown in fit_help


def test_top_level_help_is_plain_text(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--help"])
    assert exit.value.code == 0
    text = capsys.readouterr().out
    assert "``" not in text and ":func:" not in text
    for command in ("fit", "evaluate", "predict", "eda", "demo"):
        assert f"\n    {command} " in text
    assert "invasive-train COMMAND --help" in text


def test_version_names_this_package_and_torch(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0
    text = capsys.readouterr().out
    expected = importlib.metadata.version("invasive-species-service")
    assert text.startswith(f"invasive-train {expected} (torch ")
    assert f"torch {importlib.metadata.version('torch')}," in text
    assert f"torchvision {importlib.metadata.version('torchvision')}," in text


@pytest.mark.parametrize(("argv", "message"), [
    (["--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
    (["--image-size", "8"], "argument --image-size: must be from 16 to 2048, got 8"),
    (["--lr", "-1"], "argument --lr: must be above 0, got -1"),
    (["--lr", "nan"], "argument --lr: must be above 0, got nan"),
    (["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
    (["--patience", "-1"], "argument --patience: must be at least 0, got -1"),
    (["--val-fraction", "1.5"], "argument --val-fraction: must be in (0, 0.5), got 1.5"),
    (["--folds", "0"], "argument --folds: must be at least 1, got 0"),
    (["--workers", "-1"], "argument --workers: must be at least 0, got -1"),
    (["--ema-decay", "1.5"], "argument --ema-decay: must be in [0, 1), got 1.5"),
    (["--label-smoothing", "2"], "argument --label-smoothing: must be in [0, 1), got 2"),
    (["--seed", "-1"], "argument --seed: must be from 0 to 4294967295, got -1"),
    (["--dist-timeout", "0"], "argument --dist-timeout: must be above 0, got 0"),
    (["--batch-size", "ten"], "argument --batch-size: expected a whole number, got 'ten'"),
    (["--device", "gpu"], "argument --device: 'gpu' is not a device here; use auto, cpu, cuda "
                          "or cuda:N (e.g. cuda:1)"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_fit_options_out_of_range_are_one_line_errors(argv, message, capsys):
    """Audit: --batch-size 0, --image-size 8 and --lr -1 ended in tracebacks after the decode,
    --epochs 0 in exit 0 with no checkpoint."""
    with pytest.raises(SystemExit) as exit:
        main(["fit", "--data", "d", "--output", "o", *argv])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err == (f"invasive-train fit: error: {message} ('invasive-train fit --help' lists "
                   "the options)\n")


@pytest.mark.parametrize("argv", [
    ["predict", "--checkpoint", "c", "--images", "i", "--output", "o", "--batch-size", "0"],
    ["eda", "--data", "d", "--output", "o", "--samples", "-1"],
    ["demo", "--output", "o", "--epochs", "0"],
    ["evaluate", "--checkpoint", "c", "--data", "d", "--output", "o", "--device", "tpu"],
], ids=lambda v: v[0])
def test_other_commands_check_their_numbers_too(argv, capsys):
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"invasive-train {argv[0]}: error: argument ") and err.count("\n") == 1


def test_edge_values_and_devices_parse():
    parser = build_parser()
    args = parser.parse_args(["fit", "--data", "d", "--output", "o", "--image-size", "16",
                              "--val-fraction", "0.49", "--device", "CUDA:1", "--lr", "1e-4",
                              "--ema-decay", "0", "--workers", "0"])
    assert (args.image_size, args.val_fraction, args.device, args.lr) == (16, 0.49, "cuda:1",
                                                                          1e-4)


def test_input_size_bounds_match_the_checkpoints():
    from annotated_types import Ge, Le

    from model.checkpoint import CheckpointMetadata
    from training.cli_flags import INPUT_SIZE_RANGE

    bounds = CheckpointMetadata.model_fields["input_size"].metadata
    low = next(b.ge for b in bounds if isinstance(b, Ge))
    high = next(b.le for b in bounds if isinstance(b, Le))
    assert (low, high) == INPUT_SIZE_RANGE


def test_fit_output_mistakes_are_reported_without_importing_torch(kaggle_data, tmp_path):
    folder = tmp_path / "model.safetensors"
    folder.mkdir()  # as a failed --folds run used to leave
    fit = ["fit", "--data", str(kaggle_data), "--weights", "none"]
    for extra, message in (
        (["--output", str(folder)], f"error: --output {folder} is a folder; it must be the "
                                    "file to write"),
        (["--output", str(tmp_path / "m.safetensors"), "--folds", "3"],
         f"error: --output {tmp_path / 'm.safetensors'}: --folds writes a folder"),
        (["--output", str(tmp_path / "m.safetensors"), "--log", str(tmp_path)],
         f"error: --log {tmp_path} is a folder"),
        (["--output", str(tmp_path / "m.safetensors"), "--weights", "ImageNet"],
         "error: --weights ImageNet: no such file; the keywords are lower case: --weights "
         "imagenet"),
    ):
        proc = _run_main([*fit, *extra])
        assert "EXIT: 2" in proc.stdout and proc.stderr.startswith(message), proc.stderr
        assert proc.stderr.count("\n") == 1
        assert heavy_imports(proc) == "HEAVY: []"
