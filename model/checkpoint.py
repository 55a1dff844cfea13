"""One self-describing checkpoint file: safetensors weights (no pickle) plus JSON metadata.

A service started on a checkpoint needs nothing else to know the architecture, class names,
which class is "invasive", input size, normalisation and decision threshold. Writes are atomic:
the file is written beside its destination, flushed to disk and renamed over it, so a crash
mid-write leaves either the old checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from pydantic import BaseModel, Field, ValidationError, model_validator
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from model.architectures import build_model
from model.ensemble import COMBINE, FoldEnsemble
from model.preprocessing import IMAGENET_MEAN, IMAGENET_STD, PreprocessSpec

FORMAT_NAME = "invasive-species-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "invasive_species_metadata"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, truncated, or not one of ours."""


def library_versions() -> dict[str, str]:
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }


class EnsembleSpec(BaseModel):
    """A fold ensemble's members (``model.ensemble``): how many, how combined, where from."""

    members: int = Field(ge=2)
    combine: str = COMBINE
    member_info: list[dict[str, Any]] = Field(default_factory=list)  # per fold: epoch, metrics

    @model_validator(mode="after")
    def _check(self) -> EnsembleSpec:
        if self.combine != COMBINE:
            raise ValueError(f"unknown ensemble combine rule {self.combine!r}")
        return self


class CheckpointMetadata(BaseModel):
    """Everything a checkpoint says about itself. Validated on every load."""

    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    arch: str
    class_names: list[str] = Field(min_length=2)
    # The invasive class of a binary checkpoint; None (stated, never defaulted): multi-class,
    # the answer is the top class and ``threshold`` is unused.
    positive_class: str | None
    input_size: int = Field(default=224, ge=16, le=2048)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = "squash"
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    metrics: dict[str, Any] = Field(default_factory=dict)
    training_config: dict[str, Any] = Field(default_factory=dict)
    data_fingerprint: str | None = None
    library_versions: dict[str, str] = Field(default_factory=library_versions)
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    demo: bool = False
    ensemble: EnsembleSpec | None = None  # None: one network; else k members, mean probability

    @model_validator(mode="after")
    def _check(self) -> CheckpointMetadata:
        if self.format != FORMAT_NAME:
            raise ValueError(f"format is {self.format!r}, expected {FORMAT_NAME!r}")
        if self.format_version > FORMAT_VERSION:
            raise ValueError(
                f"format_version {self.format_version} is newer than this code "
                f"understands ({FORMAT_VERSION}); upgrade the service"
            )
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"class_names has duplicates: {self.class_names}")
        if self.positive_class is not None and self.positive_class not in self.class_names:
            raise ValueError(f"positive_class {self.positive_class!r} not in {self.class_names}")
        if self.resize != "squash":
            raise ValueError(f"unknown resize mode {self.resize!r}")
        return self

    @property
    def positive_index(self) -> int:
        if self.positive_class is None:
            raise ValueError("a multi-class checkpoint has no positive class")
        return self.class_names.index(self.positive_class)

    @property
    def multiclass(self) -> bool:
        """True when the checkpoint answers "which class" rather than "is it invasive"."""
        return self.positive_class is None

    @property
    def task(self) -> str:
        return "multiclass" if self.multiclass else "binary"

    @property
    def preprocess_spec(self) -> PreprocessSpec:
        return PreprocessSpec(self.input_size, tuple(self.mean), tuple(self.std), self.resize)


@dataclass
class LoadedCheckpoint:
    model: nn.Module
    metadata: CheckpointMetadata
    model_id: str  # "<arch>[x<members>]-<first 12 hex of the file's sha256>": the exact file
    path: Path


def save_checkpoint(
    path: str | os.PathLike, model: nn.Module, metadata: CheckpointMetadata
) -> Path:
    """Write ``model``'s weights and ``metadata`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    payload = save_safetensors_bytes(state, metadata={METADATA_KEY: metadata.model_dump_json()})
    return write_atomically(path, payload)


def write_atomically(path: Path, payload: bytes) -> Path:
    """Write ``payload`` beside ``path``, fsync, rename over ``path``: all or nothing.

    The file gets the permissions a plain ``open`` would give it (0666 less the umask, so
    usually 0644), not mkstemp's 0600: a checkpoint is meant to be read by other users, e.g.
    the service's uid 10001 in its container.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_current_umask())
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(payload)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def _current_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


def read_metadata(path: str | os.PathLike) -> CheckpointMetadata:
    """Only the metadata (cheap: reads the header, not the weights)."""
    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(_corrupt_message(path, exc)) from None
    return _parse_metadata(path, raw)


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> LoadedCheckpoint:
    """Read, validate and build the network. Never unpickles: no code in the file can run."""
    path = _existing(path)
    data = path.read_bytes()
    try:
        state = load_safetensors_bytes(data)
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(_corrupt_message(path, exc)) from None
    metadata = _parse_metadata(path, raw)
    try:
        model = build_network(metadata)
        model.load_state_dict(state, strict=True)
    except (ValueError, RuntimeError) as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise CheckpointError(
            f"{path}: weights do not match architecture {metadata.arch!r}: {first_line}"
        ) from None
    model.eval().to(map_location)
    members = f"x{metadata.ensemble.members}" if metadata.ensemble else ""
    model_id = f"{metadata.arch}{members}-{hashlib.sha256(data).hexdigest()[:12]}"
    return LoadedCheckpoint(model=model, metadata=metadata, model_id=model_id, path=path)


def check_checkpoint(path: str | os.PathLike) -> CheckpointMetadata:
    """What :func:`load_checkpoint` would refuse, without reading or building the weights.

    Validates the metadata, then compares the file's tensor names and shapes (its header) with
    the network the metadata describes, built on the ``meta`` device (no memory, no random
    init). The service's start-up check: a fraction of a full load's time.
    """
    metadata = read_metadata(path)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build_network(metadata).state_dict().items()}
    with safe_open(str(path), framework="pt") as f:
        stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    if stored != expected:
        missing = sorted(expected.keys() - stored.keys())
        unexpected = sorted(stored.keys() - expected.keys())
        shapes = sorted(k for k in expected.keys() & stored.keys() if expected[k] != stored[k])
        first = (f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
                 if unexpected else f"{shapes[0]!r} is {stored[shapes[0]]}, expected "
                 f"{expected[shapes[0]]}")
        outputs = {stored[k][0] for k in shapes}
        if not missing and not unexpected and len(outputs) == 1 and all(
                stored[k][1:] == expected[k][1:] and expected[k][0] == len(metadata.class_names)
                for k in shapes):
            # Only the classifier's outputs differ: the network is right, the class list not.
            raise CheckpointError(
                f"{path}: the weights' classifier has {outputs.pop()} outputs but the metadata "
                f"names {len(metadata.class_names)} classes {metadata.class_names}: {first}; "
                "the metadata does not belong to these weights")
        raise CheckpointError(f"{path}: weights do not match architecture {metadata.arch!r}: "
                              f"{first} ({len(missing)} missing, {len(unexpected)} unexpected, "
                              f"{len(shapes)} of another shape)")
    return metadata


def build_network(metadata: CheckpointMetadata) -> nn.Module:
    """The (untrained) network ``metadata`` describes: one model, or a fold ensemble of them."""
    classes = len(metadata.class_names)
    if metadata.ensemble is None:
        return build_model(metadata.arch, num_classes=classes)
    return FoldEnsemble([build_model(metadata.arch, num_classes=classes)
                         for _ in range(metadata.ensemble.members)])


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder, not a .safetensors file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def _corrupt_message(path: Path, exc: Exception) -> str:
    return f"{path} is not a readable checkpoint (corrupt or truncated safetensors file: {exc})"


def _parse_metadata(path: Path, raw: str | None) -> CheckpointMetadata:
    if raw is None:
        raise CheckpointError(
            f"{path} is a safetensors file but not a checkpoint of this project "
            f"(no {METADATA_KEY!r} metadata)"
        )
    try:
        return CheckpointMetadata.model_validate(json.loads(raw))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise CheckpointError(f"{path} has invalid checkpoint metadata: {exc}") from None
