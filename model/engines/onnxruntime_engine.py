"""The ONNX Runtime engine: the network exported by ``torch.onnx.export``, run by ONNX Runtime.

The torch model, with the shared normalisation in front (uint8 in), is exported once with the
batch axis dynamic and kept in the engine cache as ``model.onnx``. It runs in fp32 on the CPU
execution provider, or on the CUDA one when the device is a GPU and ``onnxruntime-gpu``
provides it. A session may be run from several threads at once; each run gets the threads
divided between the callers.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch

from model.engines.base import BuiltEngine, EngineSource, EngineUnavailable, NormalizedModel
from model.engines.cache import load_or_convert

MAX_BATCH = 1024


class OnnxRuntimeEngine:
    name = "onnxruntime"
    precision = "fp32"
    shape_specialised = True  # warm-up runs every batch size (see model.engines.base)

    def __init__(self, session) -> None:
        self.session = session
        self._input = session.get_inputs()[0].name

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(None, {self._input: batch.cpu().contiguous().numpy()})
        return torch.from_numpy(logits)


def build(source: EngineSource) -> BuiltEngine:
    import onnxruntime as ort

    providers: list = ["CPUExecutionProvider"]
    if source.device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise EngineUnavailable(
                "onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu)"
            )
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": source.device.index or 0}))
    versions = {"onnxruntime": ort.__version__, "torch": torch.__version__}

    def export() -> bytes:
        wrapped = NormalizedModel(source.model, source.spec).eval()
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        quiet = io.StringIO()  # the exporter prints its progress, and logs every pass
        with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), torch.no_grad(), \
                _quiet_loggers("onnxscript", "onnx_ir", "torch.onnx"):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapped,
                (source.example,),
                input_names=["pixels"],
                output_names=["logits"],
                dynamic_shapes=({0: batch},),
                dynamo=True,
                verbose=False,
            )
        return program.model_proto.SerializeToString()

    def save(model: bytes, folder: Path) -> None:
        (folder / "model.onnx").write_bytes(model)

    def load(folder: Path) -> bytes:
        return (folder / "model.onnx").read_bytes()

    model, from_cache = load_or_convert(source.cache, "onnxruntime", versions, export, save, load)
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, source.threads // max(1, source.streams))
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(model, options, providers=providers)
    return BuiltEngine(OnnxRuntimeEngine(session), from_cache)


@contextlib.contextmanager
def _quiet_loggers(*names: str):
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
