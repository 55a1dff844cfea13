"""One soak run: start the service, then warm-up, capacity, starvation and overload phases.

Each phase is bounded in requests and in time, and is followed by a wait until the server is
quiet again (a phase must not be charged for the previous one's leftovers).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import urllib.request

from benchmarks.serving.servers import RunningServer
from benchmarks.serving.stats import ratio
from benchmarks.soak import client as load
from benchmarks.soak.config import SoakConfig
from benchmarks.soak.mix import ORDINARY_PHOTO_KINDS, kind_counts, poisson_schedule
from benchmarks.soak.monitor import LivenessProbe, Sample, SeriesMonitor
from benchmarks.soak.outcomes import VIOLATION, costliest_served, per_second, phase_summary
from benchmarks.soak.payloads import Payload, build_payloads
from benchmarks.soak.service import (
    Phases,
    demo_checkpoint,
    log,
    machine_info,
    service_spec,
)
from benchmarks.soak.stats import cores, rss_drift, summarise_latency

SECRET = re.compile(r"KEY|SECRET|TOKEN|PASSWORD")  # --env values kept out of soak.json


def run(cfg: SoakConfig, argv: list[str]) -> dict:
    """Every phase; returns the results (written by the caller)."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"meta": machine_info(argv, cfg.client), "config": cfg.as_json()}
    started = time.monotonic()
    log("building payloads")
    payloads = build_payloads(cfg.corpus, cfg.photo_count, cfg.phone_count, 4, cfg.photo_dir)
    results["payloads"] = [p.describe() for items in payloads.values() for p in items]
    checkpoint = cfg.checkpoint or demo_checkpoint(cfg.out)
    spec = service_spec(cfg, checkpoint)
    env = {k: ("***" if SECRET.search(k) else v) for k, v in cfg.env.items()}
    results["server"] = {"checkpoint": str(checkpoint), "env": env, "port": spec.port}
    server = RunningServer(spec, cfg.out / "logs" / "server.log", cfg.ready_timeout_s)
    log("starting the service")
    server.start()
    try:
        results["server"]["cold_start_s"] = round(server.cold_start_s or 0.0, 2)
        monitor = SeriesMonitor(server.proc.pid).start()
        phases = Phases(cfg, server, monitor)
        try:
            results["phases"] = run_phases(cfg, phases, payloads)
        finally:
            phases.close()
            monitor.stop()
        results["server"]["alive_at_end"] = server.proc.poll() is None
        results["server"]["counters"] = scrape_counters(server, cfg.out / "server-metrics.txt")
        results["server"]["idle_cpu_cores"] = round(phases.idle_floor, 3)
        results["resources"] = resources_summary(cfg, monitor, phases.windows)
    finally:
        server.stop()
    results["server"]["log_tail"] = server.log_tail(20)
    results["meta"]["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    results["meta"]["wall_s"] = round(time.monotonic() - started, 1)
    results["violations"] = total_violations(results)
    return results


# The server's own counts of what it refused and why, beside the client's view.
SERVER_COUNTERS = ("invasive_memory_budget_gave_way_total",)


def scrape_counters(server: RunningServer, path) -> dict:
    """/metrics at the end (kept whole in ``path``), and :data:`SERVER_COUNTERS` from it
    (absent from a revision without them)."""
    try:
        with urllib.request.urlopen(server.spec.url("/metrics"), timeout=10) as answer:
            text = answer.read().decode()
    except OSError as exc:
        return {"error": repr(exc)}
    path.write_text(text)
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in SERVER_COUNTERS:
            found[name] = float(value)
    return found


def run_phases(cfg: SoakConfig, phases: Phases, payloads: dict[str, list[Payload]]) -> dict:
    photos = payloads["photo"]
    out: dict = {}

    log(f"warm-up: {cfg.warmup_s:g}s closed loop, c=4")
    res, _ = phases.measure(
        "warmup",
        lambda c: load.closed_loop(c, photos, 4, cfg.warmup_s, 100_000),
    )
    out["warmup"] = phase_summary(res, cfg.warmup_s, ORDINARY_PHOTO_KINDS)

    log(f"capacity: {cfg.capacity_seconds:g}s closed loop, c={cfg.capacity_concurrency}")
    res, resources = phases.measure(
        "capacity",
        lambda c: load.closed_loop(
            c, photos, cfg.capacity_concurrency, cfg.capacity_seconds, 1_000_000
        ),
    )
    out["capacity"] = phase_summary(res, resources["wall_s"], ORDINARY_PHOTO_KINDS) | {
        "concurrency": cfg.capacity_concurrency,
        "resources": resources,
    }
    capacity = out["capacity"]["images_per_s"]
    log(f"capacity: {capacity:.1f} img/s")

    out["starvation"] = starvation(cfg, phases, payloads)

    rate = cfg.rate or capacity * cfg.rate_factor
    if rate <= 0:
        out["soak"] = {"error": "no capacity measured (every capacity request failed): no soak"}
        return out
    out["soak"] = soak(cfg, phases, payloads, rate)
    return out


def starvation(cfg: SoakConfig, phases: Phases, payloads: dict[str, list[Payload]]) -> dict:
    """Ordinary photos one at a time, alone and then beside two expensive files in flight."""
    photos, expensive = payloads["photo"], payloads["expensive"]
    named = {p.name: p for p in expensive}
    probes: list = []
    if cfg.starvation_expensive:
        chosen = [n for n in cfg.starvation_expensive if n in named]
    else:
        log(f"starvation: each of {len(expensive)} expensive files once, to pick the costliest")
        probes, _ = phases.measure(
            "starvation_probe",
            lambda c: load.closed_loop(c, expensive, 1, 4 * cfg.request_timeout_s, len(expensive)),
        )
        chosen = costliest_served(probes, 2)
    pair = [named[n] for n in chosen] or expensive[:2]
    pair = (pair * 2)[:2]  # one expensive file in the corpus: two copies of it in flight
    dur, most = cfg.starvation_seconds, cfg.starvation_max_requests

    log(f"starvation, unloaded: {dur:g}s of one photo at a time")
    unloaded, res_u = phases.measure(
        "starvation_unloaded", lambda c: load.closed_loop(c, photos, 1, dur, most)
    )

    async def loaded(client: load.LoadClient) -> tuple[list, list]:
        origin, stop, heavy = time.monotonic(), asyncio.Event(), []
        senders = [
            asyncio.create_task(load.repeat_sender(client, p, stop, heavy, origin, 100_000))
            for p in pair
        ]
        await asyncio.sleep(1.0)  # both expensive files are in flight before measuring
        ordinary = await load.closed_loop(client, photos, 1, dur, most, origin)
        stop.set()
        _, pending = await asyncio.wait(senders, timeout=cfg.request_timeout_s + 5)
        for task in pending:
            task.cancel()
        return ordinary, heavy

    log(f"starvation, loaded: {dur:g}s of one photo at a time beside {[p.name for p in pair]}")
    (ordinary, heavy), res_l = phases.measure("starvation_loaded", loaded)
    u = phase_summary(unloaded, res_u["wall_s"], ORDINARY_PHOTO_KINDS) | {"resources": res_u}
    l_ = phase_summary(ordinary, res_l["wall_s"], ORDINARY_PHOTO_KINDS) | {"resources": res_l}
    p99_u = u["ordinary_ok_latency_ms"]["p99_ms"]
    p99_l = l_["ordinary_ok_latency_ms"]["p99_ms"]
    r = ratio(p99_l, p99_u)
    return {
        "unloaded": u,
        "loaded": l_,
        "expensive_files": [p.name for p in pair],
        "expensive_probe": [
            {"name": r.payload, "status": r.status_key, "latency_ms": round(r.latency_s * 1e3, 1)}
            for r in probes
        ],
        "expensive": phase_summary(heavy, res_l["wall_s"], ORDINARY_PHOTO_KINDS),
        "p99_ratio": r,
        "p50_ratio": ratio(
            l_["ordinary_ok_latency_ms"]["p50_ms"], u["ordinary_ok_latency_ms"]["p50_ms"]
        ),
        "target": cfg.starvation_target,
        "verdict": "n/a" if r is None else ("PASS" if r <= cfg.starvation_target else "MISS"),
    }


def soak(cfg: SoakConfig, phases: Phases, payloads: dict[str, list[Payload]], rate: float) -> dict:
    schedule = poisson_schedule(rate, cfg.duration_s, cfg.mix, cfg.seed, cfg.max_arrivals)

    def pick(arrival) -> Payload:
        items = payloads[arrival.kind]
        return items[arrival.pick % len(items)]

    log(
        f"soak: {len(schedule)} arrivals at {rate:.1f}/s for {cfg.duration_s:g}s "
        f"(max {cfg.max_inflight} in flight)"
    )
    probe = LivenessProbe(phases.server.spec.url("/health/live"), phases.monitor.t0).start()
    t_start = phases.monitor.now()
    try:
        run, resources = phases.measure(
            "soak",
            lambda c: load.open_loop(
                c, schedule, pick, cfg.max_inflight, cfg.duration_s, cfg.request_timeout_s + 10
            ),
        )
    finally:
        probe.stop()
    summary = phase_summary(run.results, cfg.duration_s, ORDINARY_PHOTO_KINDS)
    rows = per_second(run.results, cfg.duration_s, run.overflow_times, run.inflight_max)
    attach_resources(rows, phases.monitor.between(t_start, t_start + resources["wall_s"]), t_start)
    live = [a for a in probe.answers if a[0] >= t_start]
    live_failed = [a for a in live if a[1] != 200]
    return summary | {
        "rate_per_s": rate,
        "rate_factor": None if cfg.rate else cfg.rate_factor,
        "duration_s": cfg.duration_s,
        "scheduled": len(schedule),
        "scheduled_by_kind": kind_counts(schedule),
        "client_overflow": len(run.overflow_times),
        "client_overflow_by_kind": run.overflow_kinds,
        "not_sent_late": run.not_sent_late,
        "unfinished": run.unfinished,
        "send_lag_ms": summarise_latency(run.lag_s),
        "sent_per_s": len(run.results) / cfg.duration_s,
        "drain_s": round(max(0.0, run.wall_s - cfg.duration_s), 2),
        "liveness": {
            "probes": len(live),
            "failed": len(live_failed),
            "latency_ms": summarise_latency([a[2] for a in live]),
            "failures": [{"t_s": round(t, 1), "status": s} for t, s, _ in live_failed[:20]],
        },
        "resources": resources,
        "per_second": rows,
    }


def attach_resources(rows: list[dict], samples: list[Sample], t_start: float) -> None:
    """Server RSS (MB) and CPU (cores) per second row, from the 1 s samples."""
    for prev, cur in zip(samples, samples[1:], strict=False):
        second = int(cur.t - t_start)
        if 0 <= second < len(rows):
            rows[second]["server_rss_mb"] = round(cur.rss_bytes / 1e6, 1)
            rows[second]["server_cpu_cores"] = round(
                cores(cur.server_cpu_s - prev.server_cpu_s, cur.t - prev.t), 2
            )


def resources_summary(cfg: SoakConfig, monitor: SeriesMonitor, windows: dict) -> dict:
    samples = sorted(monitor.samples, key=lambda s: s.t)
    soak_window = windows.get("soak")
    soak_samples = [s for s in samples if soak_window and soak_window[0] <= s.t <= soak_window[1]]
    drift = rss_drift(
        [(s.t, s.rss_bytes) for s in soak_samples], cfg.rss_warmup_s, cfg.rss_window_s
    )
    return {
        "note": "RSS sums the server process tree (shared pages count once per process)",
        "phases": windows,
        "peak_rss_mb": round(max((s.rss_bytes for s in samples), default=0) / 1e6, 1),
        "soak_rss_drift": drift,
        "samples": [
            [
                round(s.t, 2),
                round(s.rss_bytes / 1e6, 1),
                round(s.server_cpu_s, 2),
                round(s.machine_busy_s, 2),
                round(s.client_cpu_s, 2),
            ]
            for s in samples
        ],
        "samples_columns": [
            "t_s",
            "server_rss_mb",
            "server_cpu_s",
            "machine_busy_s",
            "client_cpu_s",
        ],
    }


def total_violations(results: dict) -> dict:
    """Every violation of every phase, the liveness probe and a dead server, by reason."""
    by_reason: dict[str, int] = {}

    def add(summary: dict | None, phase: str) -> None:
        for reason, n in ((summary or {}).get("violations", {}).get("by_reason", {})).items():
            key = f"{phase}: {reason}"
            by_reason[key] = by_reason.get(key, 0) + n

    phases = results.get("phases", {})
    for name in ("warmup", "capacity", "soak"):
        add(phases.get(name), name)
    starv = phases.get("starvation", {})
    for name in ("unloaded", "loaded", "expensive"):
        add(starv.get(name), f"starvation {name}")
    failed = phases.get("soak", {}).get("liveness", {}).get("failed", 0)
    if failed:
        by_reason["soak: /health/live not 200 within 10 s"] = failed
    if "error" in phases.get("soak", {}):  # a run that proves nothing must not pass
        by_reason[f"soak: {phases['soak']['error']}"] = 1
    if not results.get("server", {}).get("alive_at_end", False):
        by_reason["server process died"] = 1
    return {"count": sum(by_reason.values()), "by_reason": by_reason, "category": VIOLATION}
