"""Score batches with a loaded checkpoint: device, precision and engine chosen once.

Offline ``predict``, training's evaluation and the service all score through
:class:`Classifier`, so identical inputs give identical probabilities everywhere. How the
network runs is its engine's business (:mod:`model.engines`): eager PyTorch by default, or a
compiled or converted copy of it, checked against eager fp32 when it is built.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.checkpoint import CheckpointMetadata, load_checkpoint
from model.engines import build_engine
from model.engines.base import DTYPES

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU. An explicit unavailable device is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {name!r} requested but CUDA is not available; use 'cpu' or 'auto'"
        )
    return device


def cpu_supports_bf16() -> bool:
    """True on CPUs with native bf16 math (AVX-512 BF16 or AMX), where bf16 autocast pays."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` -> bf16 on CUDA that supports it (else fp16), bf16 on capable CPUs, else fp32."""
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {name!r}")
    if name != "auto":
        if device.type == "cpu" and name == "fp16":
            raise ValueError("fp16 is not supported on CPU; use bf16 or fp32")
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_supports_bf16() else "fp32"


def autocast_context(device: torch.device, precision: str):
    """Autocast for bf16/fp16, a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


@dataclass
class Prediction:
    """One image's result, in the vocabulary of the checkpoint's classes."""

    label: str
    invasive: bool | None  # None for a multi-class checkpoint (no invasive class)
    probability: float  # of the positive ("invasive") class; multi-class: of the top class
    probabilities: dict[str, float]


class Classifier:
    """A model on its device, with its metadata, chosen precision and engine."""

    def __init__(
        self,
        model: torch.nn.Module,
        metadata: CheckpointMetadata,
        device: torch.device,
        precision: str,
        model_id: str = "",
        *,
        engine: str = "eager",
        cache_dir: Path | None = None,
        threads: int = 0,
        streams: int = 1,
    ) -> None:
        """``engine``: see :mod:`model.engines`; ``cache_dir`` keeps its conversions (None: the
        per-user default), ``threads`` it may use (0: torch's setting), ``streams`` the threads
        that will call :meth:`predict_probabilities` at once."""
        self.metadata = metadata
        self.spec = metadata.preprocess_spec
        self.device = device
        self.precision = precision
        self.model_id = model_id
        self.dtype = DTYPES[precision]
        self.engine, self.engine_info = build_engine(
            engine,
            model.eval().to(device),
            self.spec,
            device,
            precision,
            model_id=model_id,
            cache_dir=cache_dir,
            threads=threads,
            streams=streams,
        )

    @property
    def model(self) -> torch.nn.Module | None:
        """The eager network the engine runs (None for a converted engine)."""
        return getattr(self.engine, "module", None)

    @model.setter
    def model(self, module: torch.nn.Module) -> None:
        self.engine.module = module

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        device: str = "auto",
        precision: str = "auto",
        *,
        engine: str = "eager",
        cache_dir: Path | None = None,
        threads: int = 0,
        streams: int = 1,
    ) -> Classifier:
        dev = resolve_device(device)
        prec = resolve_precision(precision, dev)
        loaded = load_checkpoint(path, map_location=dev)
        return cls(
            loaded.model, loaded.metadata, dev, prec, loaded.model_id,
            engine=engine, cache_dir=cache_dir, threads=threads, streams=streams,
        )

    @torch.inference_mode()
    def predict_probabilities(self, batch: torch.Tensor) -> np.ndarray:
        """uint8 (N, 3, S, S) -> float32 (N, num_classes) softmax probabilities."""
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected a (N, 3, H, W) batch, got {tuple(batch.shape)}")
        logits = self.engine.run(batch.to(self.device, non_blocking=True))
        return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def warm_up(self, batch_sizes: tuple[int, ...] = (1,)) -> None:
        """Run dummy batches so the first real request pays no kernel selection or allocation."""
        size = self.spec.input_size
        for n in batch_sizes:
            self.predict_probabilities(torch.zeros((n, 3, size, size), dtype=torch.uint8))

    def interpret(self, probs: np.ndarray) -> Prediction:
        """One row of probabilities -> label at the checkpoint's decision threshold (multi-class:
        the top class, ``invasive`` None)."""
        names = self.metadata.class_names
        if self.metadata.multiclass:
            top = int(np.argmax(probs))
            return Prediction(
                label=names[top],
                invasive=None,
                probability=float(probs[top]),
                probabilities={name: float(p) for name, p in zip(names, probs, strict=True)},
            )
        pos = self.metadata.positive_index
        p_pos = float(probs[pos])
        invasive = p_pos >= self.metadata.threshold
        if invasive:
            label = names[pos]
        else:
            others = [i for i in range(len(names)) if i != pos]
            label = names[max(others, key=lambda i: probs[i])]
        return Prediction(
            label=label,
            invasive=invasive,
            probability=p_pos,
            probabilities={name: float(p) for name, p in zip(names, probs, strict=True)},
        )
