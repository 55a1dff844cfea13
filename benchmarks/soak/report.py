"""soak.json -> soak.md: one short table ready to paste into docs/benchmarks.md, per-kind counts
and the violations, if any. Pure: works from the results dict alone."""

from __future__ import annotations

from collections.abc import Mapping

from benchmarks.soak.outcomes import BACKPRESSURE, OK, REJECTED, VIOLATION


def fmt(value: float | int | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def latency_text(lat: Mapping | None, keys: tuple[str, ...] = ("p50_ms", "p99_ms")) -> str:
    """``"21.0 / 48.3 ms (n=812)"``, or "no answers" when nothing was measured."""
    if not lat or not lat.get("count"):
        return "no answers"
    return " / ".join(fmt(lat.get(k)) for k in keys) + f" ms (n={lat['count']:,})"


def status_text(statuses: Mapping[str, int], limit: int = 6) -> str:
    """``{"200": 5, "422 corrupt_image": 2}`` -> ``"200 x5, 422 corrupt_image x2"``: biggest
    first, at most ``limit`` of them."""
    items = sorted(statuses.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{k} x{v:,}" for k, v in items[:limit])
    if len(items) > limit:
        text += f", +{len(items) - limit} more"
    return text or "-"


def merged_statuses(summary: Mapping) -> dict[str, int]:
    merged: dict[str, int] = {}
    for entry in summary.get("by_kind", {}).values():
        for key, n in entry["statuses"].items():
            merged[key] = merged.get(key, 0) + n
    return merged


def _header(results: Mapping) -> list[str]:
    meta, server = results["meta"], results.get("server", {})
    env = " ".join(f"`{k}={v}`" for k, v in server.get("env", {}).items()) or "default settings"
    return [
        f"Soak and overload (issue 8), {meta['date']}, revision {meta['revision']}.  ",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['cpu_model']}, {meta['nproc']} CPUs, load average before "
        f"{', '.join(str(v) for v in meta['load_average_before'])}. Service: `python -m app` "
        f"on CPU, {env}, cold start {fmt(server.get('cold_start_s'), 1)} s. Client: this "
        f"harness, one process, {meta.get('client', 'http1')} on {meta.get('event_loop')}. "
        f"CPU in cores (2.00 = both cores of a 2-core box); RSS sums the server's process tree.",
        "",
    ]


def _rows(results: Mapping) -> list[tuple[str, str, str]]:
    phases = results.get("phases", {})
    rows: list[tuple[str, str, str]] = []
    cap = phases.get("capacity")
    if cap:
        rows.append(
            (
                "capacity",
                f"closed loop, c={cap['concurrency']}, 800x600 photos",
                f"**{fmt(cap['images_per_s'])} img/s**, p50 / p99 "
                f"{latency_text(cap['ordinary_ok_latency_ms'])}",
            )
        )
    st = phases.get("starvation")
    if st:
        rows += [
            (
                "starvation",
                "ordinary photos one at a time, alone: p50 / p99",
                latency_text(st["unloaded"]["ordinary_ok_latency_ms"]),
            ),
            (
                "starvation",
                f"same, beside 2 expensive files kept in flight "
                f"({', '.join(st['expensive_files'])}): p50 / p99",
                latency_text(st["loaded"]["ordinary_ok_latency_ms"]),
            ),
            (
                "starvation",
                "**p99 beside expensive / alone**",
                f"**{fmt(st['p99_ratio'], 2)}** (target <= {st['target']:g}: {st['verdict']}); "
                f"p50 ratio {fmt(st['p50_ratio'], 2)}",
            ),
            (
                "starvation",
                "what the expensive files got",
                f"{status_text(merged_statuses(st['expensive']))}; p50 / max "
                f"{latency_text(st['expensive']['all_latency_ms'], ('p50_ms', 'max_ms'))}",
            ),
        ]
    so = phases.get("soak")
    if so and "error" not in so:
        res = so["resources"]
        drift = results.get("resources", {}).get("soak_rss_drift")
        factor = f"{so['rate_factor']:g}x capacity, " if so.get("rate_factor") else ""
        rows += [
            (
                "overload",
                "offered load (open loop, Poisson)",
                f"{fmt(so['rate_per_s'])} req/s ({factor}seed {results['config']['seed']}) for "
                f"{so['duration_s']:g} s: {so['requests']:,} sent, {so['client_overflow']:,} not "
                f"sent (over {results['config']['max_inflight']} in flight); send lag behind "
                f"schedule p99 {fmt(so.get('send_lag_ms', {}).get('p99_ms'))} ms",
            ),
            (
                "overload",
                "admitted (2xx) ordinary photos: p50 / p99 / max",
                latency_text(so["ordinary_ok_latency_ms"], ("p50_ms", "p99_ms", "max_ms")),
            ),
            ("overload", "admitted images/s (all kinds)", fmt(so["images_per_s"])),
            (
                "overload",
                "503 with Retry-After / without",
                f"{so['retry_after']['with_retry_after']:,} / "
                f"{so['retry_after']['without_retry_after']:,}",
            ),
            (
                "overload",
                "/health/live every second: p99 / max, failures",
                f"{latency_text(so['liveness']['latency_ms'], ('p99_ms', 'max_ms'))}, "
                f"{so['liveness']['failed']} failed",
            ),
            (
                "overload",
                "server RSS: start / peak / drift",
                f"{fmt(res['server_rss_mb_start'], 0)} / {fmt(res['server_rss_mb_peak'], 0)} MB / "
                + (
                    f"{drift['drift_mb']:+,.1f} MB (median of last {drift['window_s']:g} s minus "
                    f"first {drift['window_s']:g} s after {drift['warmup_s']:g} s)"
                    if drift
                    else "-"
                ),
            ),
            (
                "overload",
                "CPU: server / client / other",
                f"{fmt(res['server_cpu_cores'], 2)} / {fmt(res['client_cpu_cores'], 2)} / "
                f"{fmt(res['other_cpu_cores'], 2)}",
            ),
        ]
    gave_way = results.get("server", {}).get("counters", {}).get(
        "invasive_memory_budget_gave_way_total"
    )
    if gave_way is not None:
        rows.append(("all", "server: requests that gave way (503, wait for each other)",
                     f"{gave_way:,.0f}"))
    v = results.get("violations", {"count": 0})
    rows.append(("all", "**violations**", f"**{v['count']:,}**"))
    return rows


def kind_table(summary: Mapping) -> list[str]:
    lines = [
        "| kind | sent | 2xx | 4xx (bad input) | 503 + Retry-After | violations | answers |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for kind, entry in summary.get("by_kind", {}).items():
        c = entry["categories"]
        lines.append(
            f"| {kind} | {entry['requests']:,} | {c[OK]:,} | {c[REJECTED]:,} | "
            f"{c[BACKPRESSURE]:,} | {c[VIOLATION]:,} | {status_text(entry['statuses'])} |"
        )
    return lines


def render_markdown(results: Mapping) -> str:
    lines = [*_header(results), "| phase | figure | value |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in _rows(results)]
    soak = results.get("phases", {}).get("soak")
    if soak and "error" not in soak:
        lines += ["", "Overload phase, by kind of request:", "", *kind_table(soak)]
    elif soak:
        lines += ["", f"Overload phase not run: {soak['error']}"]
    v = results.get("violations", {})
    if v.get("count"):
        lines += ["", "Violations by reason:", ""]
        lines += [f"- {reason}: {n:,}" for reason, n in v["by_reason"].items()]
    return "\n".join(lines) + "\n"
