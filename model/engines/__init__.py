"""Inference engines behind :class:`model.inference.Classifier`, one module each.

``eager`` is PyTorch as written; ``compile`` is the same under ``torch.compile``; ``openvino``
and ``onnxruntime`` run a conversion of it, cached on disk (:mod:`model.engines.cache`). An
engine is built once, at start-up. Anything that goes wrong while building one — the library is
not installed, conversion or compilation raises, or its probabilities on a fixed check batch
differ from eager fp32 by more than the tolerance — logs one warning line and the eager engine
runs instead: a service always starts.

``cudagraphs`` (CUDA only) replays the eager engine's kernels recorded per batch size. A new
engine (TensorRT) is a new module with a ``build(EngineSource) ->
BuiltEngine`` function, named in ``_BUILDERS``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from model.engines.base import BuiltEngine, Engine, EngineSource, EngineUnavailable, check_batch
from model.engines.cache import EngineCache, default_cache_dir
from model.engines.eager import EagerEngine
from model.preprocessing import PreprocessSpec, normalize_batch

__all__ = [
    "ENGINES",
    "Engine",
    "EngineInfo",
    "EngineUnavailable",
    "available_engines",
    "build_engine",
    "default_cache_dir",
    "resolve_engine",
]

logger = logging.getLogger("model.engines")

ENGINES = ("auto", "eager", "compile", "cudagraphs", "openvino", "onnxruntime")
_BUILDERS = {
    "compile": "model.engines.compiled",
    "cudagraphs": "model.engines.cudagraphs",
    "openvino": "model.engines.openvino_engine",
    "onnxruntime": "model.engines.onnxruntime_engine",
}
_LIBRARIES = {
    "compile": "torch",
    "cudagraphs": "torch",
    "openvino": "openvino",
    "onnxruntime": "onnxruntime",
}

# Largest difference of any probability from eager fp32 on the start-up check batch that an
# engine may show. fp32 engines compute the same sums in another order (measured: < 1e-6).
# bf16 keeps 8 bits of mantissa: on the demo checkpoint eager bf16 itself differs from fp32 by
# up to 1.9e-2 and torch.compile bf16 by 2.0e-2 (OpenVINO bf16: 5e-3), so the check allows
# 5e-2; a broken conversion (lost normalisation, wrong layout) is off by 0.1 to 1.
FP32_TOLERANCE = 1e-4
LOW_PRECISION_TOLERANCE = 5e-2


class ParityError(RuntimeError):
    """The engine's probabilities are not those of eager fp32 within the tolerance."""


@dataclass(frozen=True)
class EngineInfo:
    """Which engine runs and how it got there (``/v1/model`` shows it)."""

    name: str  # the engine running
    requested: str  # what was asked for (auto, ...)
    precision: str  # the precision it computes in
    from_cache: bool | None  # its conversion was read from the cache; None: nothing to convert
    conversion_seconds: float | None  # building it, parity check included; None for eager
    fallback_reason: str | None = None  # why ``requested`` is not running, if it is not


def available_engines() -> list[str]:
    """Engines whose library is installed (not whether they will convert: that is tried)."""
    names = ["eager", "compile"] + (["cudagraphs"] if torch.cuda.is_available() else [])
    return names + [n for n in ("openvino", "onnxruntime") if importlib.util.find_spec(n)]


def resolve_engine(name: str, device: torch.device) -> str:
    """``auto`` -> the engine for this device; any other name is returned as it is."""
    if name not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {name!r}")
    if name != "auto":
        return name
    # benchmarks/engines.py on the 2-vCPU AMD EPYC Zen 4 build box (AVX-512 BF16, no AMX),
    # resnet18 at 224 px (docs/benchmarks.md, "Inference engines"): OpenVINO bf16 ran 1.26x
    # eager bf16 at batch 16 and 9.6 ms against eager's 19.1 ms at batch 1; compile 1.09x,
    # onnxruntime 0.61x. The service on OpenVINO: 1.13x eager's throughput at c=32.
    # benchmarks/gpu_engines.py on an H100 (docs/benchmarks.md, "GPU"), resnet50 at 224 px bf16:
    # cudagraphs 0.98 ms at batch 1 against eager's 4.19-4.69 ms, 2.5-2.8x eager at batch 16,
    # 1.1-1.2x at 64, even at 128; the service's c=1 p50 10 ms against 14 ms.
    if device.type == "cuda":
        return "cudagraphs"
    if device.type == "cpu" and importlib.util.find_spec("openvino") is not None:
        return "openvino"
    return "eager"


def build_engine(
    requested: str,
    model: torch.nn.Module,
    spec: PreprocessSpec,
    device: torch.device,
    precision: str,
    *,
    model_id: str = "",
    cache_dir: Path | None = None,
    threads: int = 0,
    streams: int = 1,
) -> tuple[Engine, EngineInfo]:
    """The engine for ``model`` (eval, fp32, on ``device``; eager casts it in place)."""
    name = resolve_engine(requested, device)
    if name == "eager":
        engine = EagerEngine(model, spec, device, precision)
        return engine, EngineInfo("eager", requested, precision, None, None)
    started = time.perf_counter()
    example = check_batch(spec, device)
    try:
        reference = _probabilities(lambda x: model(normalize_batch(x, spec)), example)
        cache = EngineCache.open(cache_dir or default_cache_dir(), model_id)
        source = EngineSource(model, spec, device, precision, example,
                              threads or torch.get_num_threads(), max(1, streams), cache)
        built = _builder(name)(source)
        _check_parity(built, example, reference)
    except Exception as exc:
        reason = _one_line(exc)
        logger.warning("engine %s failed, running eager PyTorch instead: %s", name, reason)
        engine = EagerEngine(model, spec, device, precision)
        return engine, EngineInfo("eager", requested, precision, None, None, f"{name}: {reason}")
    seconds = time.perf_counter() - started
    engine = built.engine
    logger.info(
        "engine %s (%s) ready in %.2fs%s", name, engine.precision, seconds,
        " from the engine cache" if built.from_cache else "",
    )
    return engine, EngineInfo(name, requested, engine.precision, built.from_cache, seconds)


def _builder(name: str):
    return importlib.import_module(_BUILDERS[name]).build


@torch.inference_mode()
def _probabilities(forward, batch: torch.Tensor) -> torch.Tensor:
    return torch.softmax(forward(batch).float(), dim=1).cpu()


def _check_parity(built: BuiltEngine, batch: torch.Tensor, reference: torch.Tensor) -> None:
    engine = built.engine
    tolerance = FP32_TOLERANCE if engine.precision == "fp32" else LOW_PRECISION_TOLERANCE
    got = _probabilities(engine.run, batch)
    diff = float((got - reference).abs().max()) if got.shape == reference.shape else float("inf")
    if not diff <= tolerance:  # NaN fails too
        raise ParityError(
            f"its probabilities differ from eager fp32 by {diff:.3g} on the start-up check "
            f"batch (tolerance {tolerance:g} at {engine.precision})"
        )


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """The exception's type and the first line of its message (compilers write pages)."""
    text = str(exc).strip().splitlines()
    message = text[0] if text else ""
    if len(message) > limit:
        message = message[: limit - 3] + "..."
    if isinstance(exc, (ParityError, EngineUnavailable)):
        return message
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
