"""``python -m benchmarks.coldstart``: how long the entry points take to import, and to be ready.

Measured, each a few times (medians, with every repetition kept in the JSON):

- **import time** of each entry point's module (``app.__main__`` for ``invasive-api``,
  ``training.cli`` for ``invasive-train``) in a fresh interpreter: wall time, and its ten
  heaviest direct imports by cumulative time from ``python -X importtime`` (both import torch
  lazily, when a command needs it; ``start_to_ready`` pays it);
- **``--help`` wall time** of ``invasive-api`` and ``invasive-train`` (process start to exit);
- **start to ready**: ``invasive-api`` from process start to ``/health/ready`` answering 200,
  with ``INVASIVE_ENGINE`` (default ``auto``: OpenVINO on a CPU) and an engine cache that is
  empty (a fresh ``INVASIVE_ENGINE_CACHE_DIR`` each time: the conversion is paid) and warm (the
  same folder again: the conversion is read back). The service's own log lines say where the
  time went (model load + engine, warm-up); they are parsed into ``load_s`` / ``warmup_s``.

Checkpoints: the demo checkpoint (``invasive-train demo``: resnet18 at 64 px), and with
``--bench-checkpoint`` the serving benchmark's resnet18 at 224 px (random weights).

Results: ``OUT/coldstart.json`` (default ``benchmarks/results/coldstart/``). Run it on a quiet
machine: every figure is wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.serving.servers import (
    REPO_ROOT,
    RunningServer,
    ServerSpec,
    cpu_model,
    free_port,
    source_revision,
)

ENTRY_MODULES = {"invasive-api": "app.__main__", "invasive-train": "training.cli"}


def _script(name: str) -> list[str]:
    script = Path(sys.executable).with_name(name)
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", ENTRY_MODULES[name]]


def _env() -> dict[str, str]:
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": pythonpath}


def import_time(module: str) -> dict:
    """Wall seconds of ``import module`` in a fresh interpreter, and its heaviest imports."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True, text=True, env=_env(), cwd=REPO_ROOT, check=True,
    )
    wall = time.perf_counter() - started
    rows = []  # (cumulative us, name) of every import
    for line in proc.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if match:
            rows.append((int(match.group(2)), len(match.group(3)), match.group(4)))
    total = next((cum for cum, _, name in rows if name == module), None)
    # what the module itself imports (one level below it), heaviest first
    top_level = sorted((r for r in rows if r[1] == 3), reverse=True)[:10]
    return {
        "wall_s": wall,
        "module_cumulative_s": None if total is None else total / 1e6,
        "heaviest_top_level": [{"module": n, "cumulative_s": c / 1e6} for c, _, n in top_level],
    }


def help_time(name: str) -> float:
    started = time.perf_counter()
    subprocess.run([*_script(name), "--help"], capture_output=True, env=_env(), cwd=REPO_ROOT,
                   check=True)
    return time.perf_counter() - started


def start_to_ready(checkpoint: Path, cache_dir: Path, engine: str, log_dir: Path) -> dict:
    """One start of ``invasive-api``: seconds to ready, and what its log says took how long."""
    spec = ServerSpec(
        "ours",
        _script("invasive-api"),
        {
            "INVASIVE_CHECKPOINT": str(checkpoint),
            "INVASIVE_HOST": "127.0.0.1",
            "INVASIVE_PORT": str(free_port()),
            "INVASIVE_ENGINE": engine,
            "INVASIVE_ENGINE_CACHE_DIR": str(cache_dir),
            "INVASIVE_LOG_LEVEL": "info",
            "INVASIVE_DRAIN_SECONDS": "0",  # stop at once: the drain is not what is measured
        },
    )
    spec.port = int(spec.env["INVASIVE_PORT"])
    log = log_dir / f"coldstart-{time.monotonic_ns()}.log"
    server = RunningServer(spec, log, ready_timeout_s=300)
    try:
        server.start()
    finally:
        server.stop()
    text = log.read_text(errors="replace")
    load = re.search(r"engine (\S+)(?: \(from the engine cache\))?, in ([\d.]+)s", text)
    warm = re.search(r"ready after ([\d.]+)s of warm-up", text)
    return {
        "ready_s": server.cold_start_s,
        "engine": load.group(1) if load else None,
        "from_cache": "(from the engine cache)" in text,
        "load_s": float(load.group(2)) if load else None,
        "warmup_s": float(warm.group(1)) if warm else None,
    }


def _median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def measure_starts(checkpoint: Path, engine: str, repeats: int, work: Path) -> dict:
    """``repeats`` starts with an empty engine cache, then ``repeats`` with a warm one."""
    cold, warm = [], []
    for i in range(repeats):
        cache = work / f"cache-cold-{i}"
        cold.append(start_to_ready(checkpoint, cache, engine, work))
        shutil.rmtree(cache, ignore_errors=True)
    cache = work / "cache-warm"
    start_to_ready(checkpoint, cache, engine, work)  # fills it
    for _ in range(repeats):
        warm.append(start_to_ready(checkpoint, cache, engine, work))
    summary = {}
    for name, runs in (("empty_cache", cold), ("warm_cache", warm)):
        summary[name] = {
            "median_ready_s": _median(runs, "ready_s"),
            "median_load_s": _median(runs, "load_s"),
            "median_warmup_s": _median(runs, "warmup_s"),
            "runs": runs,
        }
    return summary


def run(out: Path, repeats: int, engine: str, bench_checkpoint: bool) -> dict:
    started = time.monotonic()
    results: dict = {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{os.cpu_count()} cores of {cpu_model()}",
            "revision": source_revision(),
            "load_average_at_start": list(os.getloadavg()),
            "command": "python -m benchmarks.coldstart " + " ".join(sys.argv[1:]),
            "repeats": repeats,
            "engine": engine,
        },
        "imports": {},
        "help_s": {},
        "start_to_ready": {},
    }
    for name, module in ENTRY_MODULES.items():
        runs = [import_time(module) for _ in range(repeats)]
        results["imports"][name] = {
            "module": module,
            "median_wall_s": statistics.median(r["wall_s"] for r in runs),
            "median_module_s": _median(runs, "module_cumulative_s"),
            "heaviest_top_level": runs[-1]["heaviest_top_level"],
        }
        results["help_s"][name] = statistics.median(help_time(name) for _ in range(repeats))
        _log(f"{name}: import {results['imports'][name]['median_wall_s']:.2f}s, "
             f"--help {results['help_s'][name]:.2f}s")
    with tempfile.TemporaryDirectory(prefix="coldstart-") as tmp:
        work = Path(tmp)
        demo = work / "demo.safetensors"
        subprocess.run([*_script("invasive-train"), "demo", "--output", str(demo)],
                       capture_output=True, env=_env(), cwd=REPO_ROOT, check=True)
        checkpoints = {"demo (resnet18, 64 px)": demo}
        if bench_checkpoint:
            from benchmarks.serving.fixtures import build_checkpoint

            checkpoints["bench (resnet18, 224 px)"] = build_checkpoint(work / "bench.safetensors")
        for label, path in checkpoints.items():
            results["start_to_ready"][label] = measure_starts(path, engine, repeats, work)
            r = results["start_to_ready"][label]
            _log(f"{label}: ready in {r['empty_cache']['median_ready_s']:.2f}s (empty cache), "
                 f"{r['warm_cache']['median_ready_s']:.2f}s (warm cache)")
    results["meta"]["wall_s"] = time.monotonic() - started
    results["meta"]["load_average_at_end"] = list(os.getloadavg())
    out.mkdir(parents=True, exist_ok=True)
    (out / "coldstart.json").write_text(json.dumps(results, indent=2))
    return results


def _log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.coldstart", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/coldstart"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engine", default="auto", help="INVASIVE_ENGINE for the starts")
    parser.add_argument("--bench-checkpoint", action="store_true",
                        help="also start on the serving benchmark's resnet18 at 224 px")
    args = parser.parse_args(argv)
    run(args.out, args.repeats, args.engine, args.bench_checkpoint)
    print(f"wrote {args.out}/coldstart.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
