"""Checkpoint format: round trip, clear errors on bad files, atomic writes."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file

import model.checkpoint as checkpoint_module
from model.architectures import build_model
from model.checkpoint import (
    CheckpointError,
    CheckpointMetadata,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)


def small_metadata(**overrides) -> CheckpointMetadata:
    fields = dict(arch="resnet18", class_names=["not_invasive", "invasive"],
                  positive_class="invasive", input_size=64, threshold=0.42,
                  metrics={"validation": {"roc_auc": 0.9}}, data_fingerprint="ab" * 32)
    fields.update(overrides)
    return CheckpointMetadata(**fields)


@pytest.fixture(scope="module")
def resnet18() -> torch.nn.Module:
    return build_model("resnet18", 2)


def test_round_trip_keeps_weights_and_metadata(resnet18, tmp_path):
    path = save_checkpoint(tmp_path / "sub" / "m.safetensors", resnet18, small_metadata())
    loaded = load_checkpoint(path)
    assert loaded.metadata == small_metadata().model_copy(
        update={"created_at": loaded.metadata.created_at,
                "library_versions": loaded.metadata.library_versions})
    assert loaded.metadata.threshold == 0.42 and loaded.metadata.positive_index == 1
    assert loaded.model_id.startswith("resnet18-") and len(loaded.model_id) == len("resnet18-") + 12
    original = resnet18.state_dict()
    assert all(torch.equal(v, original[k]) for k, v in loaded.model.state_dict().items())
    assert not loaded.model.training
    assert read_metadata(path).input_size == 64


def test_missing_corrupt_truncated_and_foreign_files(resnet18, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.safetensors")
    good = save_checkpoint(tmp_path / "good.safetensors", resnet18, small_metadata())
    data = good.read_bytes()

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(truncated)

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 16 + os.urandom(100))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(garbage)

    pickle_file = tmp_path / "model.pt"
    torch.save(resnet18.state_dict(), pickle_file)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(pickle_file)

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a checkpoint of this project"):
        load_checkpoint(foreign)


def test_weights_that_do_not_fit_the_architecture(resnet18, tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", resnet18,
                           small_metadata(arch="resnet34"))
    with pytest.raises(CheckpointError, match="do not match architecture 'resnet34'"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"positive_class": "weed"}, "positive_class"),
        ({"class_names": ["a", "a"], "positive_class": "a"}, "duplicates"),
        ({"format_version": 99}, "newer than this code"),
        ({"threshold": 1.5}, "threshold"),
    ],
)
def test_invalid_metadata_is_rejected_on_load(resnet18, tmp_path, overrides, message):
    meta = small_metadata().model_dump()
    meta.update(overrides)
    bad = CheckpointMetadata.model_construct(**meta)  # bypass validation to write a bad file
    path = save_checkpoint(tmp_path / "m.safetensors", resnet18, bad)
    with pytest.raises(CheckpointError, match=message):
        read_metadata(path)


def test_a_crash_mid_write_leaves_the_old_checkpoint_intact(resnet18, tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.safetensors", resnet18, small_metadata(threshold=0.1))
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, resnet18, small_metadata(threshold=0.9))
    assert path.read_bytes() == before
    assert read_metadata(path).threshold == 0.1
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left behind


def test_written_files_are_readable_by_other_users_as_the_umask_allows(tmp_path):
    # mkstemp alone makes 0600 files, which the container's uid 10001 cannot read when the
    # checkpoint was trained by another user on the host.
    previous = os.umask(0o022)
    try:
        written = checkpoint_module.write_atomically(tmp_path / "a.bin", b"weights")
        assert written.stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        private = checkpoint_module.write_atomically(tmp_path / "b.bin", b"weights")
        assert private.stat().st_mode & 0o777 == 0o600, "a stricter umask is respected"
    finally:
        os.umask(previous)
