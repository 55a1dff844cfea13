"""The ceiling: our own decode + preprocess + forward in a tight in-process loop, no HTTP.

Exactly the code our service calls (``prepare_pixels``, ``stack_pixels`` into a channels_last
batch, then ``Classifier.predict_probabilities``), run back to back at several batch sizes; the
best batch size gives the images/s no server on this machine can beat with this code, and
batch 1 gives the single-image latency a lone request cannot beat.

The engine is the one the service runs (``engine``: ``auto`` resolves as the service does,
e.g. OpenVINO on a CPU), so the ceiling is the best engine in-process, not eager PyTorch; the
runner measures eager as well, for context. One loop runs on an engine built for one caller
(OpenVINO: the LATENCY hint on every thread), parallel loops on one built for that many.

With ``parallel_loops`` > 1 the loop also runs in that many threads at once, each with its
share of the torch threads: the arrangement of the service's several inference workers, so
the ceiling is the best of one loop and of the service's own layout, never flattering it.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from benchmarks.serving.stats import latency_summary_ms
from model.device_jpeg import decode_batch
from model.engines import resolve_engine
from model.inference import Classifier, resolve_device
from model.preprocessing import prepare_pixels, stack_pixels


def on_cpu(classifier: Classifier, decode: Callable[[Callable, list], Iterable]) -> Callable:
    """Encoded images -> the service's CPU-decoded batch (``decode``: ``map`` or a pool's)."""

    def prepare(data: bytes) -> np.ndarray:
        return prepare_pixels(data, classifier.spec)

    return lambda encoded: stack_pixels(list(decode(prepare, encoded)))


def on_device(classifier: Classifier) -> Callable:
    """Encoded plain JPEGs -> the batch the service builds when it decodes them on the model's
    device (``INVASIVE_JPEG_DECODE=batch``: nvJPEG on CUDA)."""
    size = classifier.spec.input_size

    def assemble(encoded: list[bytes]) -> torch.Tensor:
        images = decode_batch(encoded, [1] * len(encoded), size, classifier.device)
        if any(image is None for image in images):
            raise RuntimeError("the device decoder failed on a benchmark photo")
        return torch.stack([image.permute(1, 2, 0) for image in images]).permute(0, 3, 1, 2)

    return assemble


def _run_batches(
    classifier: Classifier,
    images: Sequence[bytes],
    batch_size: int,
    seconds: float,
    assemble: Callable[[list[bytes]], torch.Tensor],
) -> dict:
    source = itertools.cycle(images)
    decode_s = forward_s = 0.0
    latencies = []
    done = 0
    started = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        batch = assemble([next(source) for _ in range(batch_size)])
        t1 = time.perf_counter()
        classifier.predict_probabilities(batch)
        t2 = time.perf_counter()
        decode_s += t1 - t0
        forward_s += t2 - t1
        latencies.append(t2 - t0)
        done += batch_size
        if t2 - started >= seconds and len(latencies) >= 3:
            break
    wall = time.perf_counter() - started
    return {
        "batch_size": batch_size,
        "images": done,
        "images_per_s": done / wall,
        "decode_ms_per_image": 1000.0 * decode_s / done,
        "forward_ms_per_image": 1000.0 * forward_s / done,
        "batch_latency": latency_summary_ms(latencies),
    }


def _run_parallel_loops(
    classifier: Classifier,
    images: Sequence[bytes],
    batch_size: int,
    seconds: float,
    loops: int,
    threads: int | None = None,
) -> dict:
    """``loops`` threads each running :func:`_run_batches`, torch threads split between them."""
    threads_each = max(1, (threads or torch.get_num_threads()) // loops)
    results: list[dict] = [{} for _ in range(loops)]

    def loop(index: int) -> None:
        torch.set_num_threads(threads_each)  # per calling thread under OpenMP
        results[index] = _run_batches(
            classifier, images, batch_size, seconds, on_cpu(classifier, map)
        )

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(loops)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - started
    done = sum(r["images"] for r in results)
    return {
        "batch_size": batch_size,
        "loops": loops,
        "images": done,
        "images_per_s": done / wall,
        "decode_ms_per_image": sum(r["decode_ms_per_image"] for r in results) / loops,
        "forward_ms_per_image": sum(r["forward_ms_per_image"] for r in results) / loops,
        "batch_latency": results[0]["batch_latency"],
    }


def measure_ceiling(
    checkpoint: Path,
    images: Sequence[bytes],
    batch_sizes: Sequence[int] = (1, 4, 8, 16, 32),
    seconds_per_batch_size: float = 5.0,
    device: str = "auto",
    precision: str = "auto",
    decode_threads: int = 1,
    parallel_loops: Sequence[int] = (1,),
    engine: str = "eager",
    cache_dir: Path | None = None,
    decode_on_device: bool = False,
) -> dict:
    """Images/s at each batch size, the best of them, and batch-1 latency percentiles.

    ``decode_threads`` > 1 decodes each batch's images in a thread pool (Pillow releases the
    GIL while decoding): the fair ceiling on a many-core GPU host, where one thread decoding
    would be the bottleneck. On the 2-core CPU box the loop decodes in line (1).
    ``decode_on_device``: every batch size is also run with the JPEGs decoded on the model's
    device, as the service does on CUDA; the ceiling is the best of both.
    """
    threads = torch.get_num_threads()
    engine = resolve_engine(engine, resolve_device(device))

    def build(streams: int) -> Classifier:
        built = Classifier.from_checkpoint(
            checkpoint, device=device, precision=precision, engine=engine,
            cache_dir=cache_dir, threads=threads, streams=streams,
        )
        built.warm_up(tuple(sorted(set(batch_sizes))))
        return built

    classifier = build(1)
    for image in images[:2]:  # first decode pays Pillow's lazy plugin imports
        prepare_pixels(image, classifier.spec)
    with ThreadPoolExecutor(max(1, decode_threads), thread_name_prefix="decode") as pool:
        decode = pool.map if decode_threads > 1 else map
        by_batch = [
            {**_run_batches(classifier, images, b, seconds_per_batch_size,
                            on_cpu(classifier, decode)), "loops": 1, "decode": "cpu"}
            for b in batch_sizes
        ]
    if decode_on_device:
        by_batch += [
            {**_run_batches(classifier, images, b, seconds_per_batch_size,
                            on_device(classifier)), "loops": 1, "decode": "device"}
            for b in batch_sizes
        ]
    for loops in sorted(set(parallel_loops) - {1}):
        shared = build(loops) if classifier.engine_info.name not in ("eager", "compile") else None
        by_batch += [
            _run_parallel_loops(
                shared or classifier, images, b, seconds_per_batch_size, loops, threads
            )
            for b in batch_sizes
            if b > 1
        ]
    torch.set_num_threads(threads)
    best = max(by_batch, key=lambda r: r["images_per_s"])
    # a lone image's best in-process latency: with device decoding too, the faster of the two
    single = min((r for r in by_batch if r["batch_size"] == 1 and r["loops"] == 1),
                 key=lambda r: r["batch_latency"]["p50_ms"], default=None)
    return {
        "device": str(classifier.device),
        "precision": classifier.precision,
        "engine": classifier.engine_info.name,
        "torch_threads": torch.get_num_threads(),
        "decode_threads": decode_threads,
        "by_batch_size": by_batch,
        "best_batch_size": best["batch_size"],
        "best_loops": best["loops"],
        "best_decode": best.get("decode", "cpu"),
        "images_per_s": best["images_per_s"],
        "single_image_latency": single["batch_latency"] if single else None,
    }
