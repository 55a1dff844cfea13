"""DDP training under the real ``torchrun``: 2 CPU processes (gloo) on tiny generated data.

Each torchrun run spends ~10 s starting processes and importing torch on a 2-core machine and a
few seconds training 48 images of 32 px; every test prints the wall time of each run and of
each in-process comparison run (``pytest -s`` shows them). The in-process tests at the end check
the pieces that make DDP match a single process (batches, augmentation, options) in milliseconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import load_file
from torch.distributed.run import get_args_parser as torchrun_parser

from model.architectures import build_model
from model.checkpoint import load_checkpoint
from training import distributed
from training.augment import augment_batch
from training.cli import build_parser, main
from training.demo import write_demo_dataset
from training.distributed import EveryRankError
from training.fit import epoch_loader, fit, prepare_data
from training.images import CachedImages
from training.loop import score_with_classifier
from training.metrics import binary_metrics
from training.runlog import read_log
from training.splits import holdout_split
from training.state import load_state, state_path

from . import groupnorm_fit
from .conftest import tiny_config
from .test_readme import SECTION

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")
# The CLI spelling of tiny_config(..., precision="fp32"): fp32 keeps bf16 rounding out of the
# DDP-vs-single comparisons.
# The same recipe as tests.training.conftest.tiny_config (the single-process runs compared with
# these), early stopping included: both must keep the same epoch.
FIT_FLAGS = ["--weights", "none", "--image-size", "32", "--epochs", "2", "--batch-size", "8",
             "--lr", "1e-3", "--warmup-epochs", "0", "--val-fraction", "0.25", "--workers", "0",
             "--precision", "fp32", "--patience", "3"]


@pytest.fixture(scope="module")
def ddp_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 photos (24 per class, 48x36 px): 36 train (4 global batches of 8), 12 validation."""
    return write_demo_dataset(tmp_path_factory.mktemp("ddp") / "data", images_per_class=24,
                              size=(48, 36))


def torchrun(label: str, args: list[str], *, env: dict[str, str] | None = None,
             script: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=2 -m training ARGS``; the whole process tree is
    killed (and the test fails) if it runs past ``timeout``: a hang is a failure, not a wait."""
    target = [str(script)] if script else ["-m", "training"]
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", *target, *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **(env or {})}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(proc.pid)  # torchrun starts its workers in sessions of their own
        out, err = proc.communicate()
        pytest.fail(f"torchrun {label} still running after {timeout:.0f} s (a hang):\n"
                    f"{err[-4000:]}")
    print(f"[time] torchrun {label}: {time.perf_counter() - start:.1f} s wall, "
          f"exit {proc.returncode}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _kill_tree(pid: int) -> None:
    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    for p in [*parent.children(recursive=True), parent]:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


def timed_fit(label: str, config):
    start = time.perf_counter()
    result = fit(config)
    print(f"[time] in-process {label}: {time.perf_counter() - start:.1f} s")
    return result


def epoch_history(log: Path) -> list[dict]:
    return [e for e in read_log(log) if e["event"] == "epoch"]


def summary_json(stdout: str) -> dict:
    """``fit --json``: stdout is the result alone (people's text goes to stderr)."""
    return json.loads(stdout)


def test_ddp_fit_writes_one_checkpoint_like_a_single_process(ddp_data, tmp_path):
    data_files = sorted(p.relative_to(ddp_data) for p in ddp_data.rglob("*"))
    out = tmp_path / "ddp" / "model.safetensors"
    proc = torchrun("fit (resnet18, 2 ranks, 2 epochs)",
                    ["fit", "--data", str(ddp_data), "--output", str(out), *FIT_FLAGS,
                     "--keep-train-state"])
    assert proc.returncode == 0, proc.stderr[-4000:]

    # Rank 0 alone writes and prints: four files, one log per event, one start-up and one end
    # summary, two epochs.
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "model.log.jsonl", "model.safetensors", "model.train-state.pt",
        "model.training-curves.png"]
    assert sorted(p.relative_to(ddp_data) for p in ddp_data.rglob("*")) == data_files
    events = read_log(out.with_name("model.log.jsonl"))
    assert [e["event"] for e in events] == ["start", "epoch", "epoch", "result"]
    assert events[-1]["world_size"] == 2
    assert proc.stdout.count("invasive-train fit\n") == 1
    assert proc.stdout.count("  batches     8 images, 4 per process (2 processes, torchrun)") == 1
    assert proc.stdout.count("done in ") == 1
    assert len(re.findall(r"^epoch +\d", proc.stdout, re.M)) == 2

    # Same format as a single-process checkpoint: the same tensor names (no "module."), loadable.
    single_out = tmp_path / "single" / "model.safetensors"
    single = timed_fit("single-process fit", tiny_config(ddp_data, single_out, precision="fp32"))
    with safe_open(str(out), "pt") as a, safe_open(str(single_out), "pt") as b:
        keys, single_keys = set(a.keys()), set(b.keys())
    assert keys == single_keys and not any(k.startswith("module.") for k in keys)
    assert set(load_state(state_path(out))["model"]) == keys
    loaded = load_checkpoint(out)
    meta = loaded.metadata
    assert meta.training_config["world_size"] == 2 and meta.training_config["batch_size"] == 8

    # The stored validation metrics are those of the WHOLE validation set (12 images, not one
    # rank's 6), equal to scoring the saved checkpoint on it in this single process.
    prepared = prepare_data(tiny_config(ddp_data, out))
    _, val_idx = holdout_split(prepared.data.labels, None, 0.25, 0)
    probs = score_with_classifier(loaded.model, meta, prepared.images[torch.as_tensor(val_idx)],
                                  device=torch.device("cpu"), precision="fp32")
    is_pos = np.asarray(prepared.data.labels)[val_idx] == prepared.data.positive_index
    again = binary_metrics(is_pos, probs[:, meta.positive_index], meta.threshold)
    stored = meta.metrics["validation"]
    assert stored["count"] == len(val_idx) == 12
    assert stored["roc_auc"] == again["roc_auc"]
    assert stored["confusion"] == again["confusion"]
    assert stored["log_loss"] == pytest.approx(again["log_loss"], rel=1e-5)

    # Close to the single-process run with the same global batch of 8. Not equal: PyTorch has
    # no CPU SyncBatchNorm, so each rank's BatchNorm normalises over its 4 images instead of 8
    # (the GroupNorm test below shows nothing else differs). Measured with this data, seeds 0-3,
    # 2 epochs: |delta val loss| 0.05-0.14, ROC AUC 1.0 in both; bounds: 0.25 and 0.1.
    ddp_epochs = epoch_history(out.with_name("model.log.jsonl"))
    for d, s in zip(ddp_epochs, single["history"], strict=True):
        print(f"epoch {d['epoch']}: val loss DDP {d['val_loss']:.4f} single {s['val_loss']:.4f}"
              f", ROC AUC DDP {d['val_roc_auc']:.4f} single {s['val_roc_auc']:.4f}")
        assert abs(d["val_roc_auc"] - s["val_roc_auc"]) <= 0.1
        assert abs(d["val_loss"] - s["val_loss"]) <= 0.25


def test_ddp_without_batchnorm_matches_a_single_process(ddp_data, tmp_path, monkeypatch):
    """Without BatchNorm (see groupnorm_fit.py) a DDP run is the single-process run: the same
    global batches, augmentation, averaged gradients and steps. What remains is the order of
    floating-point sums (gloo adds two per-rank gradient means, one process averages 8 images).
    Measured: the logged losses agree to all 5 decimals, the weights within 7e-5 after 2 epochs
    (3e-5 relative on the losses after 3); bounds 1e-3 relative and 1e-3 absolute."""
    out = tmp_path / "ddp" / "gn.safetensors"
    proc = torchrun("fit (resnet18 with GroupNorm, 2 ranks, 2 epochs)",
                    ["fit", "--data", str(ddp_data), "--output", str(out), *FIT_FLAGS],
                    script=REPO / "tests" / "training" / "groupnorm_fit.py")
    assert proc.returncode == 0, proc.stderr[-4000:]
    monkeypatch.setattr("training.fit.build_initial_model", groupnorm_fit.build_without_batchnorm)
    single_out = tmp_path / "single" / "gn.safetensors"
    single = timed_fit("single-process fit (GroupNorm)",
                       tiny_config(ddp_data, single_out, precision="fp32"))

    ddp_epochs = epoch_history(out.with_name("gn.log.jsonl"))
    for d, s in zip(ddp_epochs, single["history"], strict=True):
        print(f"epoch {d['epoch']}: train loss DDP {d['train_loss']} single {s['train_loss']}, "
              f"val loss DDP {d['val_loss']} single {s['val_loss']}")
        assert d["train_loss"] == pytest.approx(s["train_loss"], rel=1e-3)
        assert d["val_loss"] == pytest.approx(s["val_loss"], rel=1e-3)
        assert d["val_roc_auc"] == s["val_roc_auc"]
    ddp_weights, single_weights = load_file(str(out)), load_file(str(single_out))
    worst = max((ddp_weights[k].float() - single_weights[k].float()).abs().max().item()
                for k in ddp_weights)
    print(f"largest weight difference DDP vs single: {worst:.2e}")
    assert worst < 1e-3


def test_a_failed_rank_stops_the_job_and_resume_finishes(ddp_data, tmp_path):
    out = tmp_path / "m.safetensors"
    args = ["fit", "--data", str(ddp_data), "--output", str(out), *FIT_FLAGS, "--epochs", "3",
            "--patience", "5"]
    fault = {"INVASIVE_TEST_FAIL_RANK": "1", "INVASIVE_TEST_FAIL_EPOCH": "3"}
    failed = torchrun("fit, rank 1 fails at epoch 3", args, env=fault)
    assert failed.returncode != 0
    assert "RuntimeError: fault injected by INVASIVE_TEST_FAIL_RANK=1" in failed.stderr
    # torchrun's summary names the failed rank as the root cause (the @record error file).
    assert re.search(r"Root Cause \(first observed failure\):.*?rank\s*: 1 \(local_rank: 1\)"
                     r".*?fault injected", failed.stderr, re.S)
    # Rank 0 may have been stopped while writing epoch 2's state; the atomic write then leaves
    # epoch 1's.
    saved = load_state(state_path(out))["epoch"]
    assert saved in (1, 2)

    resumed = torchrun("fit --resume", [*args, "--resume", "--json"])
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert f"resuming {out} after epoch {saved}" in resumed.stderr
    assert summary_json(resumed.stdout)["epochs_run"] == 3
    assert summary_json(resumed.stdout)["world_size"] == 2
    assert not state_path(out).exists()  # finished: rank 0 removed the state
    assert [e["epoch"] for e in epoch_history(out.with_name("m.log.jsonl"))][-(3 - saved):] == \
        list(range(saved + 1, 4))
    assert load_checkpoint(out).metadata.training_config["world_size"] == 2


def test_a_hung_rank_fails_the_job_after_dist_timeout(ddp_data, tmp_path):
    out = tmp_path / "m.safetensors"
    fault = {"INVASIVE_TEST_FAIL_RANK": "1", "INVASIVE_TEST_FAIL_MODE": "hang"}
    start = time.perf_counter()
    proc = torchrun("fit, rank 1 hangs, --dist-timeout 5",
                    ["fit", "--data", str(ddp_data), "--output", str(out), *FIT_FLAGS,
                     "--dist-timeout", "5"], env=fault, timeout=90)
    assert proc.returncode != 0
    assert "error: rank 0 lost contact with the other processes" in proc.stderr
    assert "raise --dist-timeout (now 5 s)" in proc.stderr
    assert not out.exists()
    assert time.perf_counter() - start < 90


# ---- in-process: the pieces, without starting processes --------------------------------------


def test_sharded_batches_together_are_the_single_process_batches(monkeypatch):
    train_set = CachedImages(torch.zeros((21, 3, 4, 4), dtype=torch.uint8), list(range(21)))
    config = tiny_config(Path("data"), Path("m.safetensors"), batch_size=8, seed=3)
    cpu = torch.device("cpu")

    def batches_and_next_random(loader) -> tuple[list[list[int]], torch.Tensor]:
        return [labels.tolist() for _, labels in loader], torch.rand(3)

    single, single_rng = batches_and_next_random(epoch_loader(train_set, config, 2, cpu))
    assert len(single) == 2 and all(len(b) == 8 for b in single)  # drop_last, as before
    monkeypatch.setattr(distributed, "get_world_size", lambda: 2)
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "get_rank", lambda rank=rank: rank)
        mine, rng = batches_and_next_random(epoch_loader(train_set, config, 2, cpu))
        assert mine == [b[rank::2] for b in single]
        assert torch.equal(rng, single_rng)  # the augmentation's random stream is untouched


def test_augmentation_of_a_shard_is_those_rows_of_the_global_batch():
    batch = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(1))
    whole = augment_batch(batch, torch.Generator().manual_seed(0))
    for rank in (0, 1):
        part = augment_batch(batch[rank::2], torch.Generator().manual_seed(0), shard=(rank, 2))
        assert torch.allclose(part, whole[rank::2], atol=1e-3)


def launched_as(monkeypatch, rank: int, world_size: int = 2) -> None:
    for key, value in (("RANK", rank), ("LOCAL_RANK", rank), ("WORLD_SIZE", world_size)):
        monkeypatch.setenv(key, str(value))


def test_global_batch_must_divide_and_only_rank_0_says_so(monkeypatch, tmp_path, capsys):
    args = ["fit", "--data", str(tmp_path), "--output", str(tmp_path / "m.safetensors"),
            "--batch-size", "7"]
    launched_as(monkeypatch, rank=1)
    assert main(args) == 2
    assert capsys.readouterr().err == ""  # the same error on every rank: rank 0 prints it
    launched_as(monkeypatch, rank=0)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --batch-size 7 is the global batch")
    assert "use a multiple of 2, e.g. 6 or 8" in err
    args[4] = str(tmp_path / "cv")  # --folds writes a folder
    assert main([*args[:-1], "8", "--folds", "3"]) == 2
    assert "--folds 3 is not supported under torchrun" in capsys.readouterr().err


def test_devices_under_torchrun(monkeypatch):
    launched_as(monkeypatch, rank=1)
    with pytest.raises(EveryRankError, match="each process uses cuda:LOCAL_RANK"):
        distributed.local_device("cuda:1")
    assert distributed.local_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert distributed.local_device("auto") == torch.device("cpu")


def test_sync_batchnorm_is_off_on_cpu_and_refused_when_asked_for():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        model = build_model("resnet18", 2)
        assert distributed.use_sync_batchnorm(model, torch.device("cpu"), None) is model
        with pytest.raises(EveryRankError, match="PyTorch has no CPU SyncBatchNorm"):
            distributed.use_sync_batchnorm(model, torch.device("cpu"), True)
    finally:
        dist.destroy_process_group()


def test_readme_torchrun_commands_parse():
    lines = [line.strip() for block in re.findall(r"```bash\n(.*?)```", SECTION, re.S)
             for line in block.replace("\\\n", " ").splitlines()]
    commands = [shlex.split(line, comments=True) for line in lines
                if "torchrun" in line and not line.startswith("#")]
    commands = [c[next(i for i, w in enumerate(c) if "=" not in w):] for c in commands]  # VAR=x
    assert any("--nproc_per_node=gpu" in c for c in commands)
    assert any("--rdzv_backend=c10d" in c for c in commands)
    assert any(c[:2] == ["docker", "compose"] for c in commands)
    for command in commands:
        if command[:2] == ["docker", "compose"]:  # ... --entrypoint torchrun train ARGS
            launcher_args = command[command.index("train", command.index("torchrun")) + 1:]
        else:
            launcher_args = command[1:]
        parsed = torchrun_parser().parse_args(launcher_args)
        assert parsed.module and parsed.training_script == "training"
        assert build_parser().parse_args(parsed.training_script_args).command == "fit"
