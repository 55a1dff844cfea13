"""``python -m benchmarks.ensemble_cost``: what a fold ensemble costs to serve, beside one model.

One model and a k-member ``model.ensemble.FoldEnsemble`` of the same architecture and input
size (random weights: speed does not depend on what they learned), each on the service's engine
(``--engine``, default ``auto``: OpenVINO on a CPU), in one process: images/s at batch 16 in one
loop and batch-1 latency p50, interleaved rounds (single, ensemble, single, ...), medians. Also
the GFLOPs per image ``/v1/model`` reports. Results: ``OUT/results.json``.

    python -m benchmarks.ensemble_cost --arch mobilenet_v2 --image-size 160 --members 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import torch

from benchmarks.engines import _in_thread, _latencies, _throughput
from benchmarks.serving.servers import cpu_model
from model.architectures import build_model
from model.checkpoint import CheckpointMetadata, EnsembleSpec, save_checkpoint
from model.ensemble import FoldEnsemble, forward_gflops
from model.inference import Classifier


def checkpoints(folder: Path, arch: str, size: int, members: int) -> dict[str, Path]:
    base = dict(arch=arch, class_names=["not_invasive", "invasive"], positive_class="invasive",
                input_size=size)
    single = save_checkpoint(folder / "single.safetensors", build_model(arch, 2),
                             CheckpointMetadata(**base))
    ensemble = save_checkpoint(
        folder / "ensemble.safetensors",
        FoldEnsemble([build_model(arch, 2) for _ in range(members)]),
        CheckpointMetadata(**base, ensemble=EnsembleSpec(members=members)))
    return {"single": single, f"ensemble x{members}": ensemble}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/ensemble-cost"))
    p.add_argument("--arch", default="mobilenet_v2")
    p.add_argument("--image-size", type=int, default=160)
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--engine", default="auto")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--latency-iterations", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    threads = len(os.sched_getaffinity(0))
    torch.manual_seed(0)
    load_before = os.getloadavg()[0]
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = checkpoints(Path(tmp), args.arch, args.image_size, args.members)
        built = {}
        for name, path in paths.items():
            classifier = Classifier.from_checkpoint(path, "cpu", "auto", engine=args.engine,
                                                    cache_dir=Path(tmp) / "cache",
                                                    threads=threads)
            _in_thread(lambda c=classifier: c.warm_up((1, args.batch_size)), threads)
            built[name] = classifier
            members = args.members if name != "single" else 1
            rows[name] = {"engine": classifier.engine_info.name,
                          "precision": classifier.engine_info.precision,
                          "gflops_per_image": round(forward_gflops(
                              args.arch, 2, args.image_size, members), 3),
                          "images_per_s": [], "batch1_p50_ms": []}
        size = args.image_size
        batch = torch.randint(0, 256, (args.batch_size, 3, size, size), dtype=torch.uint8)
        image = batch[:1].clone()
        for round_ in range(args.rounds):
            for name, classifier in built.items():
                ips = _throughput(classifier, batch, args.seconds, 1, threads)
                lat = _in_thread(lambda c=classifier: _latencies(c, image,
                                                                 args.latency_iterations),
                                 threads)
                rows[name]["images_per_s"].append(ips)
                rows[name]["batch1_p50_ms"].append(statistics.median(lat) * 1000)
                print(f"round {round_ + 1} {name}: {ips:.1f} img/s, batch 1 p50 "
                      f"{statistics.median(lat) * 1000:.2f} ms", flush=True)
    for row in rows.values():
        row["images_per_s_median"] = round(statistics.median(row["images_per_s"]), 1)
        row["batch1_p50_ms_median"] = round(statistics.median(row["batch1_p50_ms"]), 2)
    single = rows["single"]
    result = {
        "command": "python -m benchmarks.ensemble_cost " + " ".join(argv or sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "cpu": cpu_model(),
        "threads": threads, "arch": args.arch, "image_size": args.image_size,
        "members": args.members, "batch_size": args.batch_size,
        "load_average": {"before": load_before, "after": os.getloadavg()[0]},
        "rows": rows,
        "ensemble_vs_single": {
            "throughput": round(rows[f"ensemble x{args.members}"]["images_per_s_median"]
                                / single["images_per_s_median"], 3),
            "batch1_latency": round(rows[f"ensemble x{args.members}"]["batch1_p50_ms_median"]
                                    / single["batch1_p50_ms_median"], 3)},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("rows", "ensemble_vs_single")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
