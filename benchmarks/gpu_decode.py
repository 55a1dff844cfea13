"""``python -m benchmarks.gpu_decode``: does decoding JPEG uploads on the GPU (nvJPEG) pay?

Why: on a GPU host the service's CPU decoding (``prepare_pixels``: Pillow at reduced DCT scale,
antialiased bilinear squash) can become the bottleneck, and ``torchvision.io.decode_jpeg(...,
device="cuda")`` could take it over. Both paths run on the same photos, as served (800x600) and
as a phone sends them (re-encoded at 4032x3024), at batch 16 and 64:

- cpu: ``prepare_pixels`` on one thread per core, ``stack_pixels``, ``.to("cuda")``;
- gpu: what the service runs (``model.device_jpeg.decode_batch``): one batched ``decode_jpeg``
  on CUDA, Pillow's draft copied by a block average, antialiased squash, uint8 batch. nvJPEG
  decodes at full size, so the pixels differ slightly: the parity section says by how much, on
  the model's uint8 input. (The first H100 run's figures came from an earlier version of this
  path with no block average.)

Figures: images/s and host CPU-ms per image (process CPU time of all threads). Results go to
``OUT/results.json`` and ``OUT/results.md``, rewritten after every measurement; a failing one
(nvJPEG missing from the build, say) is recorded, not fatal. ``--dry-run`` runs it all on the
CPU with tiny settings to prove the harness: its figures mean nothing.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image, JpegImagePlugin

from app.config import available_cpus
from benchmarks.serving.fixtures import (
    DEFAULT_PHOTO_DIR,
    PHONE_SIZE,
    REPO_ROOT,
    find_photos,
    reencode,
)
from benchmarks.serving.servers import cpu_model
from model.device_jpeg import decode_batch
from model.imaging import decode_image
from model.preprocessing import PreprocessSpec, prepare_pixels, resize_for_model, stack_pixels

# gpu_prepare.sh copies the photos here for device machines, which do not get ../shared
CARRIED_PHOTO_DIR = REPO_ROOT / ".bench-photos"
DRY_RUN_PHONE_SIZE = (1008, 756)  # a quarter of PHONE_SIZE per side: same aspect, fast on CPU


def default_out(environ: dict[str, str] = os.environ) -> Path:  # noqa: B006 - read-only
    out = environ.get("OUT")
    return Path(out) / "gpu-decode" if out else Path("benchmarks/results/gpu-decode")


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()[:2000]


# -- the two paths: encoded bytes in, a uint8 (N, 3, S, S) batch on ``device`` out -----------


def cpu_batch(
    images: Sequence[bytes], spec: PreprocessSpec, pool: ThreadPoolExecutor, device: str
) -> torch.Tensor:
    pixels = list(pool.map(lambda data: prepare_pixels(data, spec), images))
    return stack_pixels(pixels).to(device)


def gpu_batch(buffers: Sequence[bytes], size: int, device: str) -> torch.Tensor:
    """The service's own device path (``model.device_jpeg.decode_batch``: one batched nvJPEG
    decode, the draft's block average, antialiased squash) stacked into one uint8 batch."""
    images = decode_batch(buffers, [1] * len(buffers), size, torch.device(device))
    if any(image is None for image in images):
        raise RuntimeError("the device decoder failed on a benchmark photo")
    return torch.stack(images)


def _sync(device: str) -> None:
    """Wait for the device's work. A blocking event sleeps where ``torch.cuda.synchronize``
    may spin, so the host CPU-ms count the work, not the wait for the GPU."""
    if device.startswith("cuda"):
        done = torch.cuda.Event(blocking=True)
        done.record()
        done.synchronize()
        torch.cuda.synchronize()  # nothing left by now, so no spin; covers any other stream


def measure(
    run_batch: Callable[[list[int]], object], count: int, batch_size: int, seconds: float,
    device: str,
) -> dict:
    """Whole batches back to back for ``seconds`` (at least 3), after one warm-up batch; batch k
    holds images k*B .. k*B+B-1 modulo ``count``."""

    def indices(k: int) -> list[int]:
        return [(k * batch_size + i) % count for i in range(batch_size)]

    run_batch(indices(0))
    _sync(device)
    done = batches = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while True:
        run_batch(indices(batches))
        _sync(device)
        batches += 1
        done += batch_size
        wall = time.perf_counter() - wall0
        if wall >= seconds and batches >= 3:
            break
    cpu = time.process_time() - cpu0
    return {
        "images": done, "batches": batches, "wall_s": wall, "cpu_s": cpu,
        "images_per_s": done / wall, "cpu_ms_per_image": 1000 * cpu / done,
    }


def _diff(a: torch.Tensor, b: torch.Tensor) -> dict:
    d = (a.cpu().to(torch.int16) - b.cpu().to(torch.int16)).abs().numpy()
    return {
        "mean_abs": float(d.mean()), "p99_abs": float(np.percentile(d, 99)),
        "max_abs": int(d.max()), "share_over_2": float((d > 2).mean()),
    }


def parity(images: list[bytes], spec: PreprocessSpec, pool, device: str) -> dict:
    """GPU-path pixels against the service's, and against Pillow without draft mode (which
    separates the reduced-scale decode's share of the difference from the resampler's)."""
    size = spec.input_size
    cpu = cpu_batch(images, spec, pool, "cpu")
    full = stack_pixels(list(pool.map(
        lambda data: np.array(resize_for_model(decode_image(data), size), dtype=np.uint8),
        images,
    )))
    gpu = gpu_batch([bytearray(data) for data in images], size, device)
    _sync(device)
    return {
        "images": len(images), "gpu_vs_cpu": _diff(gpu, cpu),
        "gpu_vs_cpu_without_draft": _diff(gpu, full), "cpu_draft_vs_without": _diff(cpu, full),
    }


# -- the run ----------------------------------------------------------------------------------


def _environment(device: str) -> dict:
    env = {
        "cpu": cpu_model(), "cpus": available_cpus(), "python": platform.python_version(),
        "torch": torch.__version__, "cuda": torch.version.cuda, "gpu": None,
        "pillow": Image.__version__,
    }
    try:
        import torchvision

        env["torchvision"] = torchvision.__version__
    except Exception as exc:  # the GPU rows will say so too
        env["torchvision"] = f"unavailable ({_error(exc)})"
    if device.startswith("cuda"):
        try:
            env["gpu"] = torch.cuda.get_device_name(device)
        except Exception as exc:
            env["gpu"] = f"unknown ({_error(exc)})"
    return env


def jpeg_traits(images: list[bytes]) -> dict:
    """What decides nvJPEG's path: baseline JPEGs go to the hardware decoder (A100/H100), others
    (progressive) to the slower software one; EXIF orientation is only applied on the CPU."""
    traits: dict = {"progressive": 0, "with_exif_orientation": 0, "subsampling": []}
    try:
        for data in images:
            with Image.open(io.BytesIO(data)) as img:
                traits["progressive"] += bool(img.info.get("progressive"))
                traits["with_exif_orientation"] += img.getexif().get(0x0112, 1) != 1
                sampling = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}.get(
                    JpegImagePlugin.get_sampling(img), "other")
                if sampling not in traits["subsampling"]:
                    traits["subsampling"].append(sampling)
    except Exception as exc:  # a description only: never worth losing the run for
        traits["error"] = _error(exc)
    return traits


def _load_payloads(args, pool) -> list[dict]:
    photos = find_photos(args.photos, args.count)
    raw = [p.read_bytes() for p in photos]
    with Image.open(io.BytesIO(raw[0])) as first:
        w, h = first.size
    phone = list(pool.map(lambda p: reencode(p, args.phone_size), photos))
    pw, ph = args.phone_size
    return [
        {"name": f"photo-{w}x{h}", "images": raw},
        {"name": f"phone-{pw}x{ph}", "images": phone},
    ]


def new_result(args: argparse.Namespace, device: str) -> dict:
    return {
        "command": " ".join([os.path.basename(sys.executable), "-m", "benchmarks.gpu_decode",
                             *sys.argv[1:]]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "dry_run": args.dry_run,
        "device": device, **_environment(device),
        "settings": {
            "input_size": args.input_size, "threads": args.threads, "seconds": args.seconds,
            "batch_sizes": args.batch_sizes, "photo_dir": str(args.photos),
            "phone_size": list(args.phone_size),
        },
        "payloads": [], "rows": [], "parity": {}, "errors": [],
    }


def run(args: argparse.Namespace, save: Callable[[dict], None]) -> dict:
    device = "cpu" if args.dry_run else "cuda"
    spec = PreprocessSpec(input_size=args.input_size)
    result = new_result(args, device)
    save(result)
    with ThreadPoolExecutor(max_workers=args.threads) as pool:
        try:
            payloads = _load_payloads(args, pool)
        except Exception as exc:
            result["errors"].append(f"photos: {_error(exc)}")
            save(result)
            return result
        for p in payloads:
            result["payloads"].append({
                "name": p["name"], "count": len(p["images"]),
                "mean_bytes": sum(map(len, p["images"])) // len(p["images"]),
                **jpeg_traits(p["images"]),
            })
        # Every CPU row first: a CUDA error in the GPU path can poison the context for good,
        # and must not take the CPU baseline down with it.
        plan = [(path, p, b) for path in ("cpu", "gpu") for p in payloads
                for b in args.batch_sizes]
        for path, payload, batch_size in plan:
            images = payload["images"]
            row = {"payload": payload["name"], "path": path, "batch": batch_size}
            try:
                if path == "cpu":
                    def step(idx, images=images):
                        cpu_batch([images[i] for i in idx], spec, pool, device)
                else:
                    buffers = [bytearray(data) for data in images]  # frombuffer wants writable

                    def step(idx, buffers=buffers):
                        gpu_batch([buffers[i] for i in idx], spec.input_size, device)
                row.update(measure(step, len(images), batch_size, args.seconds, device))
            except Exception as exc:
                row["error"] = _error(exc)
                result["errors"].append(f"{path} {payload['name']} batch {batch_size}: "
                                        f"{row['error']}")
                traceback.print_exc()
            result["rows"].append(row)
            save(result)
        for payload in payloads:
            try:
                result["parity"][payload["name"]] = parity(payload["images"], spec, pool, device)
            except Exception as exc:
                result["parity"][payload["name"]] = {"error": _error(exc)}
                result["errors"].append(f"parity {payload['name']}: {_error(exc)}")
                traceback.print_exc()
            save(result)
    if device.startswith("cuda"):
        try:
            result["gpu_max_memory_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        except Exception as exc:
            result["errors"].append(f"memory: {_error(exc)}")
    save(result)
    return result


def markdown(result: dict) -> str:
    s = result.get("settings", {})
    lines = [
        f"# GPU (nvJPEG) vs CPU decoding of uploads at {s.get('input_size')} px "
        f"({result.get('date')})", "",
        f"`{result.get('command')}`", "",
        f"{result.get('cpu')}, {result.get('cpus')} CPUs, {s.get('threads')} decode threads; "
        f"GPU {result.get('gpu') or '-'}; torch {result.get('torch')}, torchvision "
        f"{result.get('torchvision')}, CUDA {result.get('cuda')}; {s.get('seconds')} s per "
        "row.", "",
    ]
    if result.get("dry_run"):
        lines += ["**--dry-run: decode_jpeg on the CPU, tiny settings; these figures mean "
                  "nothing.**", ""]
    lines += [
        "| payload | path | batch | images/s | CPU-ms/image | img/s GPU/CPU | CPU-ms GPU/CPU |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    cpu_rows = {(r["payload"], r["batch"]): r for r in result.get("rows", [])
                if r["path"] == "cpu" and "error" not in r}
    for r in result.get("rows", []):
        head = f"| {r['payload']} | {r['path']} | {r['batch']} |"
        if "error" in r:
            lines.append(f"{head} failed: {r['error'][:200].replace('|', '/')} | | | |")
            continue
        base = cpu_rows.get((r["payload"], r["batch"])) if r["path"] == "gpu" else None
        speed = f"{r['images_per_s'] / base['images_per_s']:.2f}x" if base else "-"
        cost = (f"{r['cpu_ms_per_image'] / base['cpu_ms_per_image']:.2f}x"
                if base and base["cpu_ms_per_image"] > 0 else "-")
        lines.append(f"{head} {r['images_per_s']:.0f} | {r['cpu_ms_per_image']:.2f} | {speed} "
                     f"| {cost} |")
    if result.get("payloads"):
        lines.append("")
        for p in result["payloads"]:
            lines.append(
                f"- {p['name']}: {p['count']} JPEGs, {p['mean_bytes'] / 1000:.0f} kB on average, "
                f"{'/'.join(p.get('subsampling', [])) or '?'}, {p.get('progressive', '?')} "
                f"progressive, {p.get('with_exif_orientation', '?')} with EXIF rotation")
    if result.get("parity"):
        lines += [
            "", "Parity of the model's uint8 input (0-255 units), GPU path against the CPU "
            "path (and against Pillow without draft mode):", "",
            "| payload | mean abs | p99 abs | max abs | share > 2 | vs no-draft mean / max |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, p in result["parity"].items():
            if "error" in p:
                lines.append(f"| {name} | failed: {p['error'][:200].replace('|', '/')} "
                             "| | | | |")
                continue
            d, n = p["gpu_vs_cpu"], p["gpu_vs_cpu_without_draft"]
            lines.append(f"| {name} | {d['mean_abs']:.2f} | {d['p99_abs']:.0f} | "
                         f"{d['max_abs']} | {d['share_over_2']:.1%} | "
                         f"{n['mean_abs']:.2f} / {n['max_abs']} |")
    if result.get("errors"):
        lines += ["", "Errors:", ""] + [f"- {e}" for e in result["errors"]]
    return "\n".join(lines) + "\n"


def _batch_sizes(text: str) -> list[int]:
    sizes = [int(t) for t in text.split(",") if t.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("batch sizes: positive integers, comma-separated")
    return sizes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_decode", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None,
                   help="default: $OUT/gpu-decode, else benchmarks/results/gpu-decode")
    p.add_argument("--photos", type=Path, default=None,
                   help=f"folder of JPEGs (default {DEFAULT_PHOTO_DIR}, else .bench-photos)")
    p.add_argument("--count", type=int, default=16, help="photos used")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--threads", type=int, default=0, help="CPU decode threads; 0: one per core")
    p.add_argument("--batch-sizes", type=_batch_sizes, default=[16, 64])
    p.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    p.add_argument("--dry-run", action="store_true",
                   help="CPU only (decode_jpeg on the CPU), 4 photos, batches 2 and 4, 0.3 s, "
                        "phone photos at 1008x756: proves the harness, figures mean nothing")
    args = p.parse_args(argv)
    args.out = args.out or default_out()
    if args.photos is None:
        args.photos = (CARRIED_PHOTO_DIR if not DEFAULT_PHOTO_DIR.is_dir()
                       and CARRIED_PHOTO_DIR.is_dir() else DEFAULT_PHOTO_DIR)
    args.threads = args.threads or available_cpus()
    args.phone_size = PHONE_SIZE
    if args.dry_run:
        args.count, args.batch_sizes, args.seconds = min(args.count, 4), [2, 4], 0.3
        args.phone_size = DRY_RUN_PHONE_SIZE
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    def save(result: dict) -> None:
        (args.out / "results.json").write_text(json.dumps(result, indent=2))
        (args.out / "results.md").write_text(markdown(result))

    if not args.dry_run and not torch.cuda.is_available():
        message = ("CUDA is not available here: this benchmark compares GPU decoding with the "
                   "CPU's and needs a CUDA device. Use --dry-run to check the harness on a CPU.")
        result = new_result(args, "cpu")
        result["errors"].append(message)
        save(result)
        print(f"gpu_decode: {message}", file=sys.stderr)
        return 2
    result: dict = {}

    def keep(r: dict) -> None:
        result.update(r)
        save(r)

    try:
        run(args, keep)
    except BaseException as exc:  # write what there is before going down
        result.setdefault("errors", []).append(f"aborted: {_error(exc)}")
        save(result)
        if not isinstance(exc, Exception):
            raise
        traceback.print_exc()
        return 1
    print(markdown(result))
    if result["errors"]:
        print(f"gpu_decode: {len(result['errors'])} measurement(s) failed; see "
              f"{args.out / 'results.json'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
