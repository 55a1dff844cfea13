"""Ordinary photos beside heavy decodes, with and without the memory budget's reserve.

Not a test. Starts the real service (``python -m app``) once per arm and round, alternating the
arms, with ``INVASIVE_MEMORY_RESERVE_PERCENT`` set to each value in ``--reserves``. In each: a
few threads send costly images one after another (16-bit and huge PNGs, an 8000x6000
progressive JPEG: the heavy lane's work, from ``tests/hostile/files.py``), and one client sends
ordinary photos one after another. Reported per arm: the ordinary photos' latency, their wait
for room in the memory budget (``timing.memory_wait_ms`` of each answer), their statuses, and
what the heavy images got and how long they took. ``--busy-processes N`` runs N busy loops at
normal priority beside each arm, standing in for other work on the host (a training run): the
condition under which the heavy lane, niced, gets a sliver of a core.

    .venv/bin/python benchmarks/memory_reserve.py --out benchmarks/results/memory-reserve
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.hostile.files import expensive_files, ordinary_photo  # noqa: E402
from tests.hostile.server import running_service  # noqa: E402

HEAVY = ["png_16bit_3500x3500", "jpeg_progressive_8000x6000", "png_rgb_6500x6500",
         "png_1x12000000"]


def heavy_stream(base_url: str, files: dict[str, bytes], offset: int, stop: threading.Event,
                 log: list) -> None:
    with httpx.Client(base_url=base_url, timeout=60) as client:
        i = offset
        while not stop.is_set():
            name = HEAVY[i % len(HEAVY)]
            i += 1
            started = time.monotonic()
            try:
                response = client.post("/v1/predict", files={"file": (name, files[name])})
                code = (None if response.status_code == 200
                        else response.json().get("error", {}).get("code"))
                log.append((name, response.status_code, code, time.monotonic() - started))
            except httpx.HTTPError as exc:
                log.append((name, None, type(exc).__name__, time.monotonic() - started))


BUSY_LOOP = (
    "import sys, time\nend = time.monotonic() + float(sys.argv[1])\n"
    "while time.monotonic() < end: pass"
)


def one_arm(checkpoint: Path, reserve: str, seconds: float, streams: int,
            files: dict[str, bytes], photos: list[bytes], busy: int = 0) -> dict[str, Any]:
    heavy_log: list = []
    ordinary: list[dict[str, Any]] = []
    with running_service(checkpoint, memory_reserve_percent=reserve, drain_seconds="0",
                         admission_wait_s="2") as service:
        stop = threading.Event()
        threads = [threading.Thread(target=heavy_stream, daemon=True,
                                    args=(service.base_url, files, k, stop, heavy_log))
                   for k in range(streams)]
        for thread in threads:
            thread.start()
        # bounded: each ends by itself shortly after the arm
        loops = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(seconds + 5)])
                 for _ in range(busy)]
        time.sleep(0.5)  # let the heavy streams start
        with httpx.Client(base_url=service.base_url, timeout=30) as client:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and len(ordinary) < 2000:
                started = time.monotonic()
                response = client.post("/v1/predict", files={
                    "file": ("photo.jpg", photos[len(ordinary) % len(photos)])})
                body = response.json()
                ordinary.append({
                    "status": response.status_code,
                    "seconds": time.monotonic() - started,
                    "memory_wait_ms": (body.get("timing", {}).get("memory_wait_ms")
                                       if response.status_code == 200 else None),
                    "code": None if response.status_code == 200 else body["error"]["code"],
                })
            metrics = client.get("/metrics").text
        for loop in loops:
            loop.kill()
            loop.wait()
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    latencies = sorted(o["seconds"] for o in ordinary)
    waits = sorted(o["memory_wait_ms"] for o in ordinary if o["memory_wait_ms"] is not None)

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))]

    return {
        "reserve_percent": float(reserve),
        "ordinary": {
            "sent": len(ordinary),
            "statuses": dict(Counter(str(o["status"]) + (f" {o['code']}" if o["code"] else "")
                                     for o in ordinary)),
            "latency_s": {"p50": statistics.median(latencies), "p99": pct(latencies, 0.99),
                          "max": latencies[-1]},
            "waited_for_memory": sum(w > 0 for w in waits),
            "memory_wait_ms": {"p99": pct(waits, 0.99), "max": waits[-1]} if waits else None,
            "over_1s": sum(s > 1.0 for s in latencies),
        },
        "heavy": dict(Counter(f"{n}: {s} {c or ''}".strip() for n, s, c, _ in heavy_log)),
        "heavy_seconds": {  # per answer: median and longest time to it
            key: {"p50": statistics.median(times), "max": max(times)}
            for key, times in _by_answer(heavy_log).items()
        },
        "gave_way_total": next((float(line.split()[-1]) for line in metrics.splitlines()
                                if line.startswith("invasive_memory_budget_gave_way_total")), None),
    }


def _by_answer(log: list) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {}
    for _, status, code, seconds in log:
        times.setdefault(f"{status} {code or ''}".strip(), []).append(seconds)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "models/model.safetensors")
    parser.add_argument("--reserves", default="0,12.5")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--streams", type=int, default=3, help="threads sending heavy images")
    parser.add_argument("--busy-processes", type=int, default=0,
                        help="busy loops at normal priority beside each arm (other host load)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    files = expensive_files()
    photos = [ordinary_photo(100 + i) for i in range(20)]
    runs = []
    for round_ in range(1, args.rounds + 1):
        for reserve in args.reserves.split(","):
            result = one_arm(args.checkpoint, reserve, args.seconds, args.streams, files, photos,
                             args.busy_processes)
            result["round"] = round_
            runs.append(result)
            o = result["ordinary"]
            heavy_times = {k: (round(v["p50"], 2), round(v["max"], 2))
                           for k, v in result["heavy_seconds"].items()}
            print(f"round {round_} reserve {reserve:>5}%: ordinary {o['sent']} sent "
                  f"{o['statuses']}, p50 {o['latency_s']['p50'] * 1000:.0f} ms, p99 "
                  f"{o['latency_s']['p99'] * 1000:.0f} ms, max {o['latency_s']['max']:.2f} s, "
                  f"over 1 s {o['over_1s']}, waited for memory {o['waited_for_memory']} "
                  f"(max {o['memory_wait_ms'] and round(o['memory_wait_ms']['max'])} ms); "
                  f"heavy {result['heavy']}; heavy seconds (p50, max) {heavy_times}", flush=True)
    revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True).stdout.strip()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({
        "command": " ".join(sys.argv), "revision": revision, "machine": platform.platform(),
        "cpus": len(os.sched_getaffinity(0)),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
