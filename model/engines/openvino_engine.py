"""The OpenVINO engine (CPU): the network converted from PyTorch, compiled by OpenVINO's CPU plugin.

The torch model, with the shared normalisation in front (uint8 in), is converted once with
``openvino.convert_model`` and kept in the engine cache as OpenVINO IR (weights stored in
fp32, not compressed to fp16, so an fp32 run matches eager). It is compiled for the CPU with
inference precision bf16 when the service runs bf16 (OpenVINO uses f32 on CPUs without bf16).

Threads: OpenVINO has its own pool. One caller (one inference worker): the LATENCY hint, one
stream using every thread. Several workers: as many streams, the threads shared between them,
the arrangement that suits eager PyTorch here (see ``app.batcher``), plus a second compilation
with the LATENCY hint on every thread for a batch that runs while the other workers are idle
(:func:`model.engines.base.using_all_threads`): a lone photo's batch 1 on one thread of the
2-vCPU box took 17 ms, on both about 10. Each calling thread gets its own infer requests (a
request is not safe to share between threads).

Layout: the compiled model takes NHWC uint8 (a pre-processing step in front of the IR does the
transpose inside OpenVINO), so the service's batch, stacked from decoded (S, S, 3) arrays and
handed over as a channels_last view, goes in without a copy; a contiguous NCHW batch (offline
scoring) is copied to NHWC once.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import torch

from model.engines.base import (
    BuiltEngine,
    EngineSource,
    EngineUnavailable,
    NormalizedModel,
    all_threads,
)
from model.engines.cache import load_or_convert

_PRECISIONS = {"bf16": "bf16", "f32": "fp32", "f16": "fp16"}


class OpenVinoEngine:
    name = "openvino"
    # The CPU plugin's kernels take any batch size: a batch size's first run cost at most
    # ~25 ms more than its next runs (resnet18 224 px, sizes 3-16, both compiled models; 2-vCPU
    # box), while warming 1, 2, 4, 8, 16 on every worker took over a second of start-up.
    # So warm-up runs batch 1 (it makes each thread's infer requests), nothing more.
    shape_specialised = False

    def __init__(self, compiled, wide=None) -> None:
        """``compiled``: for the inference workers; ``wide``: every thread, for a lone batch."""
        self.compiled = compiled
        self.wide = wide
        hint = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self.precision = _PRECISIONS.get(hint, hint)
        self._local = threading.local()

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        wide = self.wide is not None and all_threads() > 0
        request = getattr(self._local, "wide" if wide else "request", None)
        if request is None:
            request = (self.wide if wide else self.compiled).create_infer_request()
            setattr(self._local, "wide" if wide else "request", request)
        nhwc = batch.cpu().permute(0, 2, 3, 1)  # a channels_last batch: contiguous, no copy
        if not nhwc.is_contiguous():
            nhwc = nhwc.contiguous()
        result = request.infer({0: nhwc.numpy()}, share_inputs=True)
        return torch.from_numpy(result[0])  # a copy: the request reuses its output buffer


def build(source: EngineSource) -> BuiltEngine:
    if source.device.type != "cpu":
        raise EngineUnavailable(f"openvino runs on the CPU only here, not {source.device}")
    import openvino as ov

    size = source.spec.input_size
    versions = {"openvino": ov.get_version(), "torch": torch.__version__}
    core = ov.Core()

    def convert():
        wrapped = NormalizedModel(source.model, source.spec).eval()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # torch.jit.trace's deprecation notices
            return ov.convert_model(
                wrapped,
                example_input=source.example,
                input=[(ov.PartialShape([-1, 3, size, size]), ov.Type.u8)],
            )

    def save(model, folder: Path) -> None:
        ov.save_model(model, folder / "model.xml", compress_to_fp16=False)

    def load(folder: Path):
        return core.read_model(folder / "model.xml")

    model, from_cache = load_or_convert(source.cache, "openvino", versions, convert, save, load)
    model = _nhwc_input(model)
    latency = {
        "INFERENCE_PRECISION_HINT": "bf16" if source.precision == "bf16" else "f32",
        "INFERENCE_NUM_THREADS": max(1, source.threads),
        "PERFORMANCE_HINT": "LATENCY",
    }
    if source.streams == 1:
        return BuiltEngine(OpenVinoEngine(core.compile_model(model, "CPU", latency)), from_cache)
    streams = {**latency, "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": source.streams}
    engine = OpenVinoEngine(
        core.compile_model(model, "CPU", streams), wide=core.compile_model(model, "CPU", latency)
    )
    return BuiltEngine(engine, from_cache)


def _nhwc_input(model):
    """The model taking uint8 NHWC: OpenVINO transposes to the IR's NCHW inside the graph."""
    from openvino import Layout
    from openvino.preprocess import PrePostProcessor

    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_layout(Layout("NHWC"))
    ppp.input().model().set_layout(Layout("NCHW"))
    return ppp.build()
