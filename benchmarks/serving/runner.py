"""One run: fixtures, ceiling, then each server started, measured at every cell, and stopped."""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import resource
import shlex
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.serving.ceiling import measure_ceiling
from benchmarks.serving.config import RunConfig
from benchmarks.serving.fixtures import (
    PayloadSet,
    build_checkpoint,
    build_payload_sets,
    find_photos,
)
from benchmarks.serving.loadgen import require_wrk, run_wrk
from benchmarks.serving.report import (
    evaluate_targets,
    plot_results,
    render_markdown,
    targets_as_json,
)
from benchmarks.serving.servers import (
    ResourceMonitor,
    RunningServer,
    ServerSpec,
    cpu_model,
    free_port,
    idle_cpu_cores,
    machine_busy_seconds,
    python_module_argv,
    source_revision,
    wait_until_idle,
)


class ServerUnavailable(RuntimeError):
    """A server that cannot be run here (package missing); recorded, and the run goes on."""


def server_spec(name: str, cfg: RunConfig, checkpoint: Path) -> ServerSpec:
    batch_size, wait_ms = cfg.batch_settings()
    if name == "ours" or name in cfg.variants:
        # A variant is our service again with extra settings, measured beside it in one run.
        service_env = {**cfg.service_env, **cfg.variants.get(name, {})}
        script = Path(sys.executable).with_name("invasive-api")
        argv = [str(script)] if script.exists() else python_module_argv("app")
        env = {
            "INVASIVE_CHECKPOINT": str(checkpoint),
            "INVASIVE_HOST": "127.0.0.1",
            "INVASIVE_LOG_LEVEL": "warning",
            "INVASIVE_DEVICE": cfg.device,
            "INVASIVE_PRECISION": cfg.precision,
            "INVASIVE_MAX_BATCH_SIZE": str(batch_size),
            "INVASIVE_MAX_BATCH_WAIT_MS": str(wait_ms),
            **service_env,
        }
        spec = ServerSpec(name, argv, env, ready_path="/health/ready",
                          listeners=int(service_env.get("INVASIVE_PROCESSES", "1")),
                          raw_bodies=True)
        spec.env["INVASIVE_PORT"] = str(_port(spec))
        extra = " ".join(f"{k}={v}" for k, v in service_env.items())
        spec.notes = f"invasive-api, batch {batch_size}, wait {wait_ms:g} ms {extra}".strip()
        return spec
    if name == "litserve":
        if importlib.util.find_spec("litserve") is None:
            raise ServerUnavailable("litserve is not installed: pip install -e '.[bench]'")
        workers = cfg.litserve_worker_count()
        spec = ServerSpec(name, [], ready_path="/health")
        accelerator = "cpu" if cfg.device == "cpu" else "auto"
        spec.argv = python_module_argv(
            "benchmarks.serving.litserve_app",
            "--checkpoint",
            str(checkpoint),
            "--port",
            str(_port(spec)),
            "--precision",
            cfg.precision,
            "--accelerator",
            accelerator,
            "--max-batch-size",
            str(batch_size),
            "--batch-timeout",
            str(wait_ms / 1000.0),
            "--workers",
            str(workers),
        )
        spec.notes = (
            f"LitServe, batch {batch_size}, batch_timeout {wait_ms:g} ms, "
            f"{workers} inference workers, fast_queue"
        )
        return spec
    if name == "naive":
        spec = ServerSpec(name, [], ready_path="/health")
        spec.argv = python_module_argv(
            "benchmarks.serving.naive_app",
            "--checkpoint",
            str(checkpoint),
            "--port",
            str(_port(spec)),
            "--device",
            cfg.device,
        )
        spec.notes = "FastAPI async def, full PIL decode, torchvision transforms, fp32, batch 1"
        return spec
    raise ValueError(f"unknown server {name!r}")


def _port(spec: ServerSpec) -> int:
    spec.port = spec.port or free_port()
    return spec.port


def measure_cell(
    server: RunningServer,
    idle_cores: float,
    payload: PayloadSet,
    concurrency: int,
    duration_s: float,
    cfg: RunConfig,
) -> dict:
    """Warm up, let the server settle, measure one (payload, concurrency) cell."""
    pid = server.proc.pid
    args = (
        server.spec.url(server.spec.predict_path),
        payload.body_dir,
        payload.count,
        payload.content_type,
        concurrency,
    )
    if cfg.warmup_s > 0:
        run_wrk(*args, duration_s=cfg.warmup_s, timeout_s=cfg.request_timeout_s,
                threads=cfg.wrk_threads)
    settle_s = wait_until_idle(pid, idle_cores)
    harness_cpu0 = _own_cpu_seconds()
    with ResourceMonitor(pid) as monitor:
        load = run_wrk(*args, duration_s=duration_s, timeout_s=cfg.request_timeout_s,
                       threads=cfg.wrk_threads)
    server_cores = monitor.cpu_cores
    client_cores = load.client_cpu_s / monitor.wall_s
    # this process while it waits on wrk: the psutil sampling thread, mostly
    harness_cores = (_own_cpu_seconds() - harness_cpu0) / monitor.wall_s
    machine_cores = monitor.machine_busy_s / monitor.wall_s
    return {
        "payload": payload.name,
        "concurrency": concurrency,
        "duration_s": load.duration_s,
        "requests": load.requests,
        "images_per_s": load.images_per_s,
        "latency_ms": load.latency_ms,
        "errors": load.errors,
        "error_count": load.error_count,
        "server_cpu_cores": server_cores,
        "peak_rss_mb": monitor.peak_rss / 1e6,
        "client_cpu_cores": client_cores,
        "harness_cpu_cores": harness_cores,
        # everything else the machine did meanwhile: other people's work shows up here
        "background_cpu_cores": max(
            0.0, machine_cores - server_cores - client_cores - harness_cores
        ),
        "settle_s": settle_s,
    }


def measure_server(
    spec: ServerSpec, payloads: list[PayloadSet], cfg: RunConfig, log_dir: Path
) -> dict:
    result: dict = {"notes": spec.notes, "cells": [], "cold_start_s": None, "error": None}
    server = RunningServer(spec, log_dir / f"{spec.name}.log", cfg.ready_timeout_s)
    try:
        server.start()
        result["cold_start_s"] = server.cold_start_s
        idle = result["idle_cpu_cores"] = idle_cpu_cores(server.proc.pid)
        _log(
            f"{spec.name}: ready in {server.cold_start_s:.1f}s on port {spec.port}, "
            f"idle CPU {idle:.2f} cores"
        )
        for payload in payloads:
            if payload.raw and not spec.raw_bodies:
                continue  # it takes multipart uploads only
            # seconds per answer at the lowest concurrency (p50 / c in a closed loop): sizes
            # the cells after it, so a slow server gets long enough cells
            per_request_s = None
            for concurrency in sorted(cfg.concurrency):
                duration_s = cfg.cell_duration(concurrency, per_request_s)
                cell = measure_cell(server, idle, payload, concurrency, duration_s, cfg)
                result["cells"].append(cell)
                lat = cell["latency_ms"]
                if per_request_s is None and lat["p50_ms"] is not None:
                    per_request_s = lat["p50_ms"] / 1000.0 / concurrency
                _log(
                    f"{spec.name} {payload.name} c={concurrency}: "
                    f"{cell['images_per_s']:.1f} img/s, p50 {_ms(lat['p50_ms'])}, "
                    f"p99 {_ms(lat['p99_ms'])}, errors {cell['error_count']}, "
                    f"{cell['duration_s']:.0f}s, background CPU "
                    f"{cell['background_cpu_cores']:.2f}"
                )
                wait_until_idle(server.proc.pid, idle)
    except RuntimeError as exc:
        result["error"] = str(exc)
        _log(f"{spec.name}: FAILED: {exc}")
    finally:
        server.stop()
    return result


def machine_description() -> str:
    return f"{os.cpu_count()} cores of {cpu_model()}"


def run(cfg: RunConfig, command: str | None = None, device_name: str | None = None) -> dict:
    """Measure everything ``cfg`` asks for; write results.{json,md,png} into ``cfg.out``."""
    # A time limit (timeout, a device call's) sends SIGTERM: unwind, so that the server running
    # is stopped (finally blocks) instead of outliving us; the H100 run of 2026-11-27 left one
    # holding the GPU's memory.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return _run(cfg, command, device_name)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(cfg: RunConfig, command: str | None, device_name: str | None) -> dict:
    require_wrk()  # fail before minutes of setup, with the install hint
    photos = find_photos(cfg.photo_dir, cfg.photo_count)
    cfg.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    import torch

    results: dict = {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine_description() + (f", {device_name}" if device_name else ""),
            "torch": torch.__version__,
            "revision": source_revision(),
            "load_average_at_start": list(os.getloadavg()),
            "command": command or "python -m benchmarks.serving " + shlex.join(sys.argv[1:]),
        },
        "config": {
            "concurrency": list(cfg.concurrency),
            "duration_s": cfg.duration_s,
            "warmup_s": cfg.warmup_s,
            "batch_settings": list(cfg.batch_settings()),
            "device": cfg.device,
            "precision": cfg.precision,
            "wrk_threads": cfg.wrk_threads,
        },
        "servers": {},
    }
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        work = Path(tmp)
        checkpoint = build_checkpoint(work / "bench.safetensors", cfg.arch, cfg.input_size)
        results["checkpoint"] = {"arch": cfg.arch, "input_size": cfg.input_size}
        _log(f"payloads and {cfg.arch} checkpoint ready in {work}")
        payloads = build_payload_sets(photos, work, cfg.payload_kinds)
        results["payloads"] = [
            {"name": p.name, "count": p.count, "mean_bytes": p.mean_bytes} for p in payloads
        ]
        results["ceiling"] = _measure_ceilings(cfg, checkpoint, payloads, cfg.service_engine())
        if cfg.ceiling_eager_batch_sizes and results_engine(results) != "eager":
            results["ceiling_eager"] = _measure_ceilings(
                cfg, checkpoint, payloads, "eager", cfg.ceiling_eager_batch_sizes
            )
        _release_gpu_memory()  # the ceilings' models: the servers need the GPU's memory
        for name in cfg.server_order():
            try:
                spec = server_spec(name, cfg, checkpoint)
            except ServerUnavailable as exc:
                results["servers"][name] = {"notes": "", "cells": [], "error": str(exc)}
                _log(f"{name}: skipped: {exc}")
                continue
            results["servers"][name] = measure_server(spec, payloads, cfg, cfg.out / "logs")
            # after every server: a run stopped early (a device's time limit) keeps its figures
            _write(results, cfg.out, started)
    _write(results, cfg.out, started)
    plot_results(results, cfg.out / "results.png")
    return results


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _release_gpu_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _write(results: dict, out: Path, started: float) -> None:
    results["meta"]["wall_s"] = time.monotonic() - started
    targets = evaluate_targets(results)
    results["targets"] = targets_as_json(targets)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(render_markdown(results, targets))


def results_engine(results: dict) -> str | None:
    """The engine the (best-engine) ceiling ran on."""
    return next((c.get("engine") for c in results.get("ceiling", {}).values()), None)


def _measure_ceilings(
    cfg: RunConfig,
    checkpoint: Path,
    payloads: list[PayloadSet],
    engine: str,
    batch_sizes: tuple[int, ...] | None = None,
) -> dict:
    ceilings = {}
    # a raw-body set holds the same photos as a multipart one: it shares that set's ceiling
    shared = {p.name: q.name for p in payloads if p.raw
              for q in payloads if not q.raw and q.images is p.images}
    for payload in payloads:
        if payload.name in shared:
            continue
        busy0, own0, t0 = machine_busy_seconds(), _own_cpu_seconds(), time.monotonic()
        ceiling = measure_ceiling(
            checkpoint,
            payload.images,
            batch_sizes or cfg.ceiling_batch_sizes,
            cfg.ceiling_seconds,
            cfg.device,
            cfg.precision,
            cfg.ceiling_decode_threads,
            cfg.ceiling_parallel_loops,
            engine=engine,
            decode_on_device=cfg.ceiling_decode_on_device,
        )
        wall = time.monotonic() - t0
        other = (machine_busy_seconds() - busy0) - (_own_cpu_seconds() - own0)
        ceiling["background_cpu_cores"] = max(0.0, other / wall)
        ceilings[payload.name] = ceiling
        _log(
            f"ceiling {payload.name}: {ceiling['images_per_s']:.1f} img/s at batch "
            f"{ceiling['best_batch_size']} x {ceiling['best_loops']} loop(s) "
            f"({ceiling['engine']}, {ceiling['precision']} on {ceiling['device']})"
        )
    for raw, multipart in shared.items():
        ceilings[raw] = ceilings[multipart]
    return ceilings


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
