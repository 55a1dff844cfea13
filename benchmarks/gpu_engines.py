"""``python -m benchmarks.gpu_engines``: the inference engines on a CUDA device, side by side.

The GPU counterpart of ``benchmarks/engines.py``: one checkpoint (resnet50 at 224 px, random
weights: speed does not depend on what they learned), each engine built as the service builds it
(``Classifier.from_checkpoint(..., engine=...)``, start-up parity check included), then

- images/s at each batch size, whole batches back to back, each batch a uint8 channels_last
  tensor in host memory as the service's batcher stacks it (so the host-to-device copy of the
  pixels and the copy of the probabilities back are in the figure, as they are in the service);
- per-batch latency p50 at batch 1 (what a lone request waits for the model);
- the largest difference of any probability from eager fp32 on the same GPU, over 32
  photo-like inputs (``model.engines.base.check_batch``).

Engines: eager fp32 (the reference), eager at the service's precision (bf16 on an H100), the
``cudagraphs`` engine, ``compile`` (inductor) and ``onnxruntime`` (needs its CUDA provider;
recorded as a fallback where it has none). Results are rewritten after each engine, so a run cut
short keeps what it measured: ``OUT/results.json`` and ``OUT/results.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from benchmarks.engines import count_images, latencies
from benchmarks.serving.fixtures import build_checkpoint
from benchmarks.serving.stats import latency_summary_ms
from model.checkpoint import load_checkpoint
from model.engines.base import check_batch
from model.inference import Classifier

DEFAULT_ENGINES = ("eager-fp32", "eager", "cudagraphs", "compile", "onnxruntime")


def default_out(environ: dict[str, str] = os.environ) -> Path:  # noqa: B006 - read-only
    out = environ.get("OUT")
    return Path(out) / "gpu-engines" if out else Path("benchmarks/results/gpu-engines")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _host_batch(size: int, n: int, seed: int) -> torch.Tensor:
    """A uint8 (n, 3, S, S) batch in host memory, channels_last as ``stack_pixels`` makes it."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, 3), generator=gen,
                         dtype=torch.uint8).permute(0, 3, 1, 2)


def measure_engine(label: str, checkpoint: Path, args, cache: Path, reference,
                   probe) -> tuple[dict, np.ndarray | None]:
    """The engine's row, and its probabilities on ``probe`` (None when it fell back)."""
    engine, precision = ("eager", "fp32") if label == "eager-fp32" else (label, args.precision)
    started = time.perf_counter()
    clf = Classifier.from_checkpoint(checkpoint, args.device, precision, engine=engine,
                                     cache_dir=cache)
    info = clf.engine_info
    row: dict = {"engine": info.name, "requested": engine, "precision": info.precision,
                 "load_s": round(time.perf_counter() - started, 3),
                 "conversion_s": info.conversion_seconds, "fallback_reason": info.fallback_reason}
    if info.name != engine:
        return row, None
    started = time.perf_counter()
    clf.warm_up(tuple(args.batch_sizes))
    _sync(clf.device)
    row["warmup_s"] = round(time.perf_counter() - started, 3)
    got = clf.predict_probabilities(probe)
    row["max_diff_vs_eager_fp32"] = (None if reference is None
                                     else float(abs(got - reference).max()))
    row["images_per_s"] = {}
    for n in args.batch_sizes:
        done, seconds = count_images(clf, _host_batch(args.image_size, n, seed=n), args.seconds)
        row["images_per_s"][str(n)] = round(done / seconds, 1)
    row["batch1"] = latency_summary_ms(
        latencies(clf, _host_batch(args.image_size, 1, seed=1), args.latency_iterations))
    if torch.cuda.is_available():
        row["max_memory_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    del clf
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return row, got


def run(args: argparse.Namespace, out: Path) -> dict:
    work = Path(tempfile.mkdtemp(prefix="gpu-engines-"))
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(work / "inductor")  # compile starts cold
    checkpoint = build_checkpoint(work / "model.safetensors", args.arch, args.image_size)
    device = torch.device(args.device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none (CPU)"
    result: dict = {
        "command": " ".join(["python", "-m", "benchmarks.gpu_engines", *sys.argv[1:]]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "gpu": gpu,
        "torch": torch.__version__, "cuda": torch.version.cuda, "arch": args.arch,
        "image_size": args.image_size, "batch_sizes": args.batch_sizes,
        "seconds": args.seconds, "engines": {},
    }
    reference = None
    probe = check_batch(load_checkpoint(checkpoint).metadata.preprocess_spec,
                        torch.device("cpu"), size=32)
    for label in args.engines:
        try:
            row, got = measure_engine(label, checkpoint, args, work / f"cache-{label}",
                                      reference, probe)
        except Exception as exc:  # one engine's failure must not lose the others' figures
            row, got = {"requested": label, "error": f"{type(exc).__name__}: {exc}"[:500]}, None
        if label == "eager-fp32" and got is not None:
            reference = got  # the reference for the engines after it (its own diff: 0)
            row["max_diff_vs_eager_fp32"] = 0.0
        result["engines"][label] = row
        print(f"{label}: {json.dumps(row)}", file=sys.stderr, flush=True)
        write(result, out)
    return result


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "results.md").write_text(markdown(result))


def markdown(result: dict) -> str:
    sizes = [str(n) for n in result["batch_sizes"]]
    lines = [
        f"# Inference engines on {result['gpu']}, {result['arch']} at {result['image_size']} px "
        f"({result['date']})", "",
        f"`{result['command']}`; torch {result['torch']}, CUDA {result['cuda']}.", "",
        "| engine | precision | build s | " + " | ".join(f"batch {n} img/s" for n in sizes)
        + " | batch 1 p50 / p95 ms | max diff vs eager fp32 |",
        "|---|---|---:|" + "---:|" * len(sizes) + "---|---:|",
    ]
    base = result["engines"].get("eager", {}).get("images_per_s", {})
    for label, row in result["engines"].items():
        if "images_per_s" not in row:
            why = row.get("error") or f"fell back: {row.get('fallback_reason')}"
            lines.append(f"| {label} | - | - | " + " | ".join("-" for _ in sizes)
                         + f" | {why} | |")
            continue
        cells = []
        for n in sizes:
            rate, ref = row["images_per_s"][n], base.get(n)
            cells.append(f"{rate:.0f}" + (f" ({rate / ref:.2f}x)" if ref and label != "eager"
                                          else ""))
        build = row["conversion_s"] if row["conversion_s"] is not None else row["load_s"]
        diff = row.get("max_diff_vs_eager_fp32")
        lines.append(
            f"| {label} | {row['precision']} | {build:.1f} | " + " | ".join(cells)
            + f" | {row['batch1']['p50_ms']:.2f} / {row['batch1']['p95_ms']:.2f} | "
            + ("-" if diff is None else f"{diff:.1e}") + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_engines", description=__doc__)
    p.add_argument("--out", type=Path, default=None, help="default: $OUT/gpu-engines")
    p.add_argument("--engines", type=lambda t: [e for e in t.split(",") if e],
                   default=list(DEFAULT_ENGINES))
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-sizes", type=lambda t: [int(n) for n in t.split(",")],
                   default=[1, 16, 64, 128])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--device", default="cuda")
    p.add_argument("--seconds", type=float, default=1.5, help="per throughput measurement")
    p.add_argument("--latency-iterations", type=int, default=100)
    p.add_argument("--dry-run", action="store_true",
                   help="CPU, resnet18 at 64 px, tiny cells: proves the script; no real figures")
    args = p.parse_args(argv)
    if args.dry_run:
        args.device, args.arch, args.image_size, args.batch_sizes = "cpu", "resnet18", 64, [1, 4]
        args.seconds, args.latency_iterations = 0.2, 5
    elif not torch.cuda.is_available():
        print("benchmarks.gpu_engines: no CUDA device here; --dry-run tests the script on CPU",
              file=sys.stderr)
        return 2
    out = args.out or default_out()
    result = run(args, out)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
