"""``python -m benchmarks.engines``: the inference engines side by side, in one process, one run.

For each engine installed (eager, compile, openvino, onnxruntime; ``model.engines``), on one
checkpoint (resnet18 at 224 px, random weights: speed does not depend on what they learned):

- conversion time cold (empty engine cache; for ``compile`` an empty inductor cache) and again
  from the cache, as the service's start-up pays them (parity check included; ``compile``'s
  second build runs in the same process, so it may also profit from in-memory caches);
- images/s at batch 16 in one loop, and in two loops side by side (the service's CPU layout of
  two inference workers; the engine built for two callers);
- batch-1 latency p50/p95.

Inputs are random uint8 batches already on the device: no decoding, only the engine. The rounds
interleave the engines (A B C A B C), so a drift of the machine's speed hits all of them alike;
each figure is the median over rounds. Every loop runs on a thread of its own, as the service's
inference workers do. Results: ``OUT/results.json`` (everything) and ``OUT/results.md``.

Run it on a quiet machine; the load average before and after is recorded beside the figures.
``--quick`` only proves the harness works: its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from app.config import available_cpus
from benchmarks.serving.fixtures import build_checkpoint
from benchmarks.serving.servers import cpu_model
from benchmarks.serving.stats import latency_summary_ms
from model.engines import available_engines
from model.inference import Classifier


def _in_thread(fn, torch_threads: int):
    """Run ``fn()`` on a new thread with its own torch thread count; return its result."""
    box: dict = {}

    def target() -> None:
        torch.get_num_threads()  # OpenMP's per-thread team: initialise, then set (app.runtime)
        torch.set_num_threads(torch_threads)
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised on the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def count_images(classifier: Classifier, batch: torch.Tensor, seconds: float) -> tuple[int, float]:
    """(images done, seconds taken): whole batches back to back for ``seconds``, at least 3."""
    done, started = 0, time.perf_counter()
    while True:
        classifier.predict_probabilities(batch)
        done += len(batch)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and done >= 3 * len(batch):
            return done, elapsed


def _throughput(classifier, batch, seconds: float, loops: int, threads: int) -> float:
    """Images/s of ``loops`` threads at once, each with its share of the threads."""
    counts = [0] * loops

    def loop(index: int) -> None:
        counts[index] = _in_thread(lambda: count_images(classifier, batch, seconds)[0],
                                   max(1, threads // loops))

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(loops)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.perf_counter() - started)


def latencies(classifier: Classifier, image: torch.Tensor, iterations: int) -> list[float]:
    out = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        classifier.predict_probabilities(image)
        out.append(time.perf_counter() - t0)
    return out


def _build(checkpoint: Path, engine: str, args, cache: Path, streams: int, threads: int):
    started = time.perf_counter()
    classifier = Classifier.from_checkpoint(
        checkpoint, "cpu", args.precision, engine=engine, cache_dir=cache, threads=threads,
        streams=streams,
    )
    load_s = time.perf_counter() - started
    info = classifier.engine_info
    started = time.perf_counter()
    _in_thread(lambda: classifier.warm_up((1, args.batch_size)), max(1, threads // streams))
    return classifier, {
        "load_s": load_s, "warmup_s": time.perf_counter() - started, "engine": info.name,
        "precision": info.precision, "from_cache": info.from_cache,
        "conversion_s": info.conversion_seconds, "fallback_reason": info.fallback_reason,
    }


def run(args: argparse.Namespace) -> dict:
    threads = args.threads or available_cpus()
    torch.set_num_threads(threads)
    work = Path(tempfile.mkdtemp(prefix="engines-bench-"))
    # compile's cold start must not find an earlier run's inductor graphs
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(work / "inductor")
    checkpoint = build_checkpoint(work / "model.safetensors", args.arch, args.image_size)
    engines = [e for e in args.engines if e in available_engines()]
    size = args.image_size
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (args.batch_size, 3, size, size), generator=gen,
                          dtype=torch.uint8)
    result: dict = {
        "command": " ".join([os.path.basename(sys.executable), "-m", "benchmarks.engines",
                             *sys.argv[1:]]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "cpu": cpu_model(),
        "cpus": available_cpus(), "torch_threads": threads, "torch": torch.__version__,
        "arch": args.arch, "image_size": size, "batch_size": args.batch_size,
        "precision": args.precision, "quick": args.quick, "load_before": os.getloadavg(),
        "skipped": sorted(set(args.engines) - set(engines)), "engines": {},
    }
    built = {}
    for engine in engines:
        cache = work / f"cache-{engine}"
        _, cold = _build(checkpoint, engine, args, cache, 1, threads)
        one, warm = _build(checkpoint, engine, args, cache, 1, threads)
        two, _ = _build(checkpoint, engine, args, cache, 2, threads)
        row = result["engines"][engine] = {"cold": cold, "cached": warm, "rounds": []}
        if warm["engine"] != engine:
            row["failed"] = warm["fallback_reason"]
            continue
        built[engine] = (one, two)
    for _ in range(args.rounds):
        for engine, (one, two) in built.items():
            measured = {
                "images_per_s": _throughput(one, batch, args.seconds, 1, threads),
                "images_per_s_2_loops": _throughput(two, batch, args.seconds, 2, threads),
                "batch1": latency_summary_ms(_in_thread(
                    lambda c=one: latencies(c, batch[:1], args.latency_iterations), threads)),
            }
            result["engines"][engine]["rounds"].append(measured)
    for row in result["engines"].values():
        if row["rounds"]:
            row["median"] = {
                "images_per_s": statistics.median(r["images_per_s"] for r in row["rounds"]),
                "images_per_s_2_loops": statistics.median(
                    r["images_per_s_2_loops"] for r in row["rounds"]),
                "batch1_p50_ms": statistics.median(r["batch1"]["p50_ms"] for r in row["rounds"]),
                "batch1_p95_ms": statistics.median(r["batch1"]["p95_ms"] for r in row["rounds"]),
            }
    result["load_after"] = os.getloadavg()
    shutil.rmtree(work, ignore_errors=True)
    return result


def markdown(result: dict) -> str:
    lines = [
        f"# Inference engines, {result['arch']} at {result['image_size']} px "
        f"({result['date']})", "",
        f"`{result['command']}`", "",
        f"{result['cpu']}, {result['cpus']} CPUs, {result['torch_threads']} threads, torch "
        f"{result['torch']}; load average before {result['load_before'][0]:.2f}, after "
        f"{result['load_after'][0]:.2f}.", "",
    ]
    if result["quick"]:
        lines += ["**--quick: a smoke test of the harness; these figures mean nothing.**", ""]
    base = result["engines"].get("eager", {}).get("median", {})
    lines += [
        f"| engine | precision | conversion cold / from cache (s) | batch {result['batch_size']} "
        "img/s | vs eager | 2 loops img/s | vs eager | batch 1 p50 / p95 (ms) |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for name, row in result["engines"].items():
        cold, cached = row["cold"], row["cached"]
        conv = f"{_num(cold['conversion_s'])} / {_num(cached['conversion_s'])}"
        if "median" not in row:
            lines.append(f"| {name} | - | {conv} | failed: {row.get('failed')} | | | | |")
            continue
        m = row["median"]
        lines.append(
            f"| {name} | {cached['precision']} | {conv} | {m['images_per_s']:.1f} | "
            f"{_ratio(m['images_per_s'], base.get('images_per_s'))} | "
            f"{m['images_per_s_2_loops']:.1f} | "
            f"{_ratio(m['images_per_s_2_loops'], base.get('images_per_s_2_loops'))} | "
            f"{m['batch1_p50_ms']:.1f} / {m['batch1_p95_ms']:.1f} |"
        )
    if result["skipped"]:
        lines += ["", f"Not installed, skipped: {', '.join(result['skipped'])}."]
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _ratio(value: float, base: float | None) -> str:
    return f"{value / base:.2f}x" if base else "-"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.engines", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/engines"))
    p.add_argument("--engines", type=lambda t: [e for e in t.split(",") if e],
                   default=["eager", "compile", "openvino", "onnxruntime"])
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--threads", type=int, default=0, help="0: one per available CPU")
    p.add_argument("--seconds", type=float, default=10.0, help="per throughput measurement")
    p.add_argument("--latency-iterations", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians reported")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 64 px, 0.5 s, 10 iterations, 1 round; figures mean nothing")
    args = p.parse_args(argv)
    if args.quick:
        args.image_size, args.seconds, args.latency_iterations, args.rounds = 64, 0.5, 10, 1
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    (args.out / "results.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
