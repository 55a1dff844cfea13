"""The cudagraphs engine: the eager engine's kernels recorded once per batch size, then replayed.

A ResNet forward is a few hundred kernel launches. At small batches a GPU finishes each kernel
sooner than Python launches the next, so eager runs launch-bound: the lone request waits on the
CPU, not on the GPU. A CUDA graph records the launches of one forward once and replays them in
one call. Graphs have static shapes and addresses: each batch size gets its own graph, captured
at warm-up (``shape_specialised``: warm-up runs every batch size the batcher makes) or on first
use, with its own input and output buffers.

The graphs share one memory pool, so their intermediate buffers overlap: replays are therefore
serialised by one lock, held from copying a batch in to copying the logits out. On one GPU the
forwards run one after another anyway (the service runs one inference worker there). CUDA only.
"""

from __future__ import annotations

import threading

import torch

from model.engines.base import BuiltEngine, EngineSource, EngineUnavailable
from model.engines.eager import EagerEngine

# Eager runs before a capture: cuDNN picks its algorithms and the allocator settles on a side
# stream first, as torch.cuda.graphs' documentation asks.
_WARMUP_RUNS = 2


class CudaGraphEngine:
    name = "cudagraphs"
    shape_specialised = True  # one graph per batch size (see model.engines.base)
    records_every_size = True  # warm-up records every size up to the largest batch

    def __init__(self, eager: EagerEngine, device: torch.device) -> None:
        self.eager = eager
        self.precision = eager.precision
        self.device = device
        self._pool = torch.cuda.graph_pool_handle()
        # One side stream for every capture's eager warm-up runs. The caching allocator keeps a
        # freed block for reuse on the stream it was allocated on: a new stream per capture (of
        # 64 batch sizes) stranded each size's activations in its own stream's cache, 9.5 GB per
        # server process on the H100, and 8 processes did not fit in its 80 GB.
        self._side = torch.cuda.Stream(device)
        # batch shape -> (graph, its input buffer, its output buffer)
        self._graphs: dict[tuple[int, ...], tuple[torch.cuda.CUDAGraph, torch.Tensor,
                                                  torch.Tensor]] = {}
        self._lock = threading.Lock()

    @property
    def graph_count(self) -> int:
        return len(self._graphs)

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        # inference_mode: the buffers were made under it (Classifier calls in it), and updating
        # them in place from outside it is an error (seen on the H100: a direct call failed)
        with self._lock, torch.inference_mode():
            key = tuple(batch.shape)
            captured = self._graphs.get(key)
            if captured is None:
                captured = self._graphs[key] = self._capture(batch)
            graph, static_in, static_out = captured
            static_in.copy_(batch)
            graph.replay()
            # The next replay (of any graph: they share the pool) overwrites the buffer.
            return static_out.clone()

    def _capture(self, batch: torch.Tensor):
        # channels_last like the batches the service stacks, so copy_ keeps one layout
        static_in = torch.empty_like(batch, memory_format=torch.channels_last)
        static_in.copy_(batch)
        side = self._side
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(_WARMUP_RUNS):
                self.eager.run(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: work other threads do on the GPU meanwhile does not void the capture
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            static_out = self.eager.run(static_in)
        return graph, static_in, static_out


def build(source: EngineSource) -> BuiltEngine:
    if source.device.type != "cuda":
        raise EngineUnavailable(f"CUDA graphs need a CUDA device, not {source.device}")
    eager = EagerEngine(source.model, source.spec, source.device, source.precision)
    engine = CudaGraphEngine(eager, source.device)
    with torch.inference_mode():
        engine.run(source.example)  # a first capture now: a failure shows at start-up
    return BuiltEngine(engine, from_cache=None)
