"""Training benchmark: grouped 5-fold CV ROC AUC, training speed, and the decode-cache speed-up.

Not a test. Runs the real ``fit`` code (default recipe, ``training.fit.FitConfig``) on
``../shared/data/hogweed-dev`` (645 tiles cut from field photos; ``tiles_meta.csv`` names each
tile's ``source_image`` so tiles of one photo never straddle train and validation):

1. decode-cache speed-up, side by side in this run: the same model, precision and ``--workers``
   train epochs alternately on (a) the plain loop that decodes every full-size photo each epoch
   and (b) the decode cache; the data (loader wait) and compute time per batch are recorded;
2. 5-fold grouped CV for mobilenet_v2 from ``../shared/weights/mobilenet_v2_imagenet_features.pth``
   and for resnet18 from scratch: the pooled out-of-fold ROC AUC with its 95 % bootstrap interval
   over photos (the figure to quote; each fold's epoch and threshold are chosen on an inner
   validation split, never on the fold it scores, see ``training.cv``), the per-fold held-out
   ROC AUC mean ± sd, the out-of-fold threshold, images/s, epoch time.

    nice python benchmarks/train_cv.py > benchmarks/results/train_cv.log 2>&1

Writes ``benchmarks/results/train_cv.json``; fold checkpoints and each arch's
``oof_predictions.csv`` go to ``benchmarks/results/raw/`` (git-ignored). The data is read in
place, never copied.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.architectures import build_model  # noqa: E402
from model.imaging import decode_image  # noqa: E402
from model.inference import resolve_device, resolve_precision  # noqa: E402
from model.preprocessing import PreprocessSpec, prepare_input, resize_for_model  # noqa: E402
from training.fit import (  # noqa: E402
    FitConfig,
    epoch_loader,
    fit,
    prepare_data,
    train_dataset,
)
from training.images import FullDecodeImages  # noqa: E402
from training.loop import train_one_epoch  # noqa: E402
from training.optim import build_optimizer, build_schedule  # noqa: E402
from training.splits import kfold_splits  # noqa: E402

SHARED = ROOT.parent / "shared"


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def decode_cost(paths: list[Path], size: int, count: int = 48, reps: int = 3) -> dict:
    """Median ms per photo, alternating photo by photo so background load hits both alike:
    full-size decode + resize (the plain loop) vs draft decode + resize + tensor (the cache)."""
    spec = PreprocessSpec(input_size=size)
    full, draft = [], []
    for _ in range(reps):
        for p in paths[:count]:
            t = time.perf_counter()
            resize_for_model(decode_image(p), size)
            full.append(time.perf_counter() - t)
            t = time.perf_counter()
            prepare_input(p, spec)
            draft.append(time.perf_counter() - t)
    return {"full_decode_resize_ms": round(statistics.median(full) * 1000, 2),
            "draft_decode_resize_ms": round(statistics.median(draft) * 1000, 2)}


def cache_speedup(config: FitConfig, epochs: int) -> dict:
    """Alternate plain and cached epochs of the same model; compare seconds per epoch."""
    t = time.perf_counter()
    prepared = prepare_data(config)
    cache_build_s = time.perf_counter() - t
    train_idx, _ = kfold_splits(prepared.data.labels, prepared.groups, config.folds, config.seed)[0]
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    model = build_model(config.arch, len(prepared.data.class_names))
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config.lr, config.weight_decay)
    schedule = build_schedule(optimizer, 10_000, 0)
    cached = train_dataset(prepared, train_idx)
    plain = FullDecodeImages(
        [prepared.data.samples[i].path for i in train_idx],
        [prepared.data.samples[i].label for i in train_idx],
        prepared.spec,
    )
    runs: dict[str, list[dict]] = {"plain": [], "cached": []}
    for epoch in range(1, epochs + 1):
        for name, dataset in (("plain", plain), ("cached", cached)):
            stats = train_one_epoch(
                model,
                epoch_loader(dataset, config, epoch, device),
                optimizer,
                schedule,
                device=device,
                precision=precision,
                spec=prepared.spec,
                desc=f"speed {name} {epoch}",
            )
            row = {
                "epoch_s": round(stats.seconds, 2),
                "images_per_s": round(stats.images_per_s, 1),
                "data_s": round(stats.data_seconds, 2),
                "compute_s": round(stats.compute_seconds, 2),
            }
            runs[name].append(row)
            print(f"speed {name:6s} epoch {epoch}: {row}", flush=True)
    median = {k: statistics.median(r["epoch_s"] for r in v) for k, v in runs.items()}
    batches = -(-len(train_idx) // config.batch_size)
    return {
        "arch": config.arch,
        "precision": precision,
        "workers": config.workers,
        "image_size": config.image_size,
        "batch_size": config.batch_size,
        "train_images": len(train_idx),
        "cache_build_s": round(cache_build_s, 2),
        "epochs": runs,
        "median_epoch_s": median,
        "speedup": round(median["plain"] / median["cached"], 2),
        "data_ms_per_batch": {
            k: round(statistics.median(r["data_s"] for r in v) / batches * 1000, 1)
            for k, v in runs.items()
        },
        "compute_ms_per_batch": {
            k: round(statistics.median(r["compute_s"] for r in v) / batches * 1000, 1)
            for k, v in runs.items()
        },
        **decode_cost([s.path for s in prepared.data.samples], config.image_size),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "hogweed-dev")
    parser.add_argument(
        "--mobilenet-weights",
        type=Path,
        default=SHARED / "weights" / "mobilenet_v2_imagenet_features.pth",
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--speed-epochs", type=int, default=2)
    parser.add_argument("--speed-workers", default="2",
                        help="comma-separated --workers values to compare at (default: 2)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-cv", action="store_true")
    parser.add_argument("--archs", default="mobilenet_v2,resnet18")
    parser.add_argument("--epochs", type=int, default=None, help="override (smoke runs only)")
    parser.add_argument("--raw-dir", type=Path, default=ROOT / "benchmarks/results/raw/train_cv")
    parser.add_argument("--summary", type=Path, default=ROOT / "benchmarks/results/train_cv.json")
    args = parser.parse_args()
    if not (args.data / "train_labels.csv").is_file():
        print(f"benchmark data not found at {args.data}", file=sys.stderr)
        return 2

    def recipe(arch: str, weights: str) -> FitConfig:  # the defaults, plus what CV needs
        return FitConfig(
            data=args.data,
            output=args.raw_dir / arch,
            arch=arch,
            weights=weights,
            folds=args.folds,
            group_column="source_image",
            group_file=args.data / "tiles_meta.csv",
            **({"epochs": args.epochs} if args.epochs else {}),
        )

    weights = {"mobilenet_v2": str(args.mobilenet_weights), "resnet18": "none"}
    results: dict = {"machine": machine(), "command": " ".join(sys.argv)}
    started = time.perf_counter()
    if not args.skip_speed:
        for workers in (int(w) for w in args.speed_workers.split(",")):
            config = recipe("mobilenet_v2", "none")
            config.workers = workers
            key = f"decode_cache_workers{workers}"
            results[key] = cache_speedup(config, args.speed_epochs)
            print(json.dumps(results[key], indent=2), flush=True)
    if not args.skip_cv:
        results["cv"] = {}
        for arch in args.archs.split(","):
            t = time.perf_counter()
            summary = fit(recipe(arch, weights[arch]))
            summary["wall_s"] = round(time.perf_counter() - t, 1)
            results["cv"][arch] = {k: v for k, v in summary.items() if k != "folds_detail"}
            print(json.dumps(results["cv"][arch], indent=2, default=str), flush=True)
            low, high = summary["roc_auc_oof_interval"]
            print(f"{arch}: pooled out-of-fold ROC AUC {summary['roc_auc_oof']:.4f} (95 % "
                  f"interval {low:.4f}-{high:.4f}, bootstrap over photos); per-fold held-out "
                  f"{summary['roc_auc_mean']:.4f} ± {summary['roc_auc_sd']:.4f}; OOF threshold "
                  f"{summary['threshold']:.4f} ({summary['threshold_method']})", flush=True)
    results["wall_s"] = round(time.perf_counter() - started, 1)
    args.summary.parent.mkdir(parents=True, exist_ok=True)
    args.summary.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {args.summary} after {results['wall_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
