"""The compile engine: the eager engine's network (same dtype and layout) under ``torch.compile``.

Inductor compiles the normalisation and the network together. ``dynamic=True`` makes one graph
serve every batch size above 1 (batch 1 gets its own: PyTorch specialises sizes 0 and 1), so
warm-up compiles twice, not once per batch size. The first compilation happens at build time,
so a failure (e.g. no C++ compiler for inductor on the CPU) is caught at start-up. Inductor
keeps its own on-disk cache (``TORCHINDUCTOR_CACHE_DIR``, default under /tmp): a restart that
finds its graphs there compiles much faster, reported as ``from_cache``.
"""

from __future__ import annotations

import torch

from model.engines.base import BuiltEngine, EngineSource, NormalizedModel
from model.engines.eager import EagerEngine


class CompiledEngine:
    name = "compile"
    shape_specialised = True  # warm-up runs every batch size (see model.engines.base)

    def __init__(self, eager: EagerEngine) -> None:
        self.precision = eager.precision
        wrapped = NormalizedModel(eager.module, eager.spec, eager.dtype, channels_last=True)
        self.compiled = torch.compile(wrapped, dynamic=True)

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        return self.compiled(batch)


def build(source: EngineSource) -> BuiltEngine:
    from torch._dynamo.utils import counters

    engine = CompiledEngine(EagerEngine(source.model, source.spec, source.device, source.precision))
    hits = counters["inductor"]["fxgraph_cache_hit"]
    with torch.inference_mode():
        engine.run(source.example)
    return BuiltEngine(engine, from_cache=counters["inductor"]["fxgraph_cache_hit"] > hits)
