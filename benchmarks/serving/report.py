"""Turn raw results into issue 13's verdicts, a markdown table and a PNG chart."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.serving.stats import ratio

OURS, LITSERVE, NAIVE = "ours", "litserve", "naive"
RSS_LIMIT_MB = 1500.0  # 1.5 GB


@dataclass
class Target:
    payload: str
    name: str
    measured: float | None
    goal: str
    passed: bool | None  # None: could not be evaluated (a server or cell is missing)

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "MISS", None: "n/a"}[self.passed]


def find_cell(results: dict, server: str, payload: str, concurrency: int) -> dict | None:
    for cell in results.get("servers", {}).get(server, {}).get("cells", []):
        if cell["payload"] == payload and cell["concurrency"] == concurrency:
            return cell
    return None


def _check(value: float | None, ok) -> bool | None:
    return None if value is None else bool(ok(value))


def evaluate_targets(results: dict) -> list[Target]:
    """Issue 13's targets (issue 5's, tightened; the naive ratio shown for context, with no
    target), per payload, at the highest and lowest concurrency measured. The ceiling is the
    best engine's."""
    concurrencies = results["config"]["concurrency"]
    high, low = max(concurrencies), min(concurrencies)
    targets: list[Target] = []
    for payload in [p["name"] for p in results["payloads"]]:
        ours_hi = find_cell(results, OURS, payload, high)
        ours_lo = find_cell(results, OURS, payload, low)
        lit_hi = find_cell(results, LITSERVE, payload, high)
        naive_hi = find_cell(results, NAIVE, payload, high)
        ceiling = results.get("ceiling", {}).get(payload)

        def ips(cell: dict | None) -> float | None:
            return cell["images_per_s"] if cell else None

        def p99(cell: dict | None) -> float | None:
            return cell["latency_ms"]["p99_ms"] if cell else None

        ceil_ips = ceiling["images_per_s"] if ceiling else None
        ceil_p50 = (ceiling.get("single_image_latency") or {}).get("p50_ms") if ceiling else None
        r = ratio(ips(ours_hi), ceil_ips)
        targets.append(
            Target(
                payload, f"c={high} img/s vs ceiling", r, ">= 0.9x", _check(r, lambda v: v >= 0.9)
            )
        )
        r = ratio(ips(ours_hi), ips(lit_hi))
        targets.append(
            Target(
                payload, f"c={high} img/s vs LitServe", r, ">= 1.3x", _check(r, lambda v: v >= 1.3)
            )
        )
        r = ratio(p99(ours_hi), p99(lit_hi))
        targets.append(
            Target(
                payload,
                f"c={high} p99 vs LitServe p99",
                r,
                "<= 1.0x",
                _check(r, lambda v: v <= 1.0),
            )
        )
        r = ratio(ips(ours_hi), ips(naive_hi))  # context only: issue 13 sets no target on it
        targets.append(Target(payload, f"c={high} img/s vs naive", r, "none (context)", None))
        r = ratio(ours_lo["latency_ms"]["p50_ms"] if ours_lo else None, ceil_p50)
        targets.append(
            Target(
                payload,
                f"c={low} p50 vs ceiling single-image",
                r,
                "<= 1.25x",
                _check(r, lambda v: v <= 1.25),
            )
        )
    if _on_gpu(results):
        targets += _gpu_targets(results, high)
    ours = results.get("servers", {}).get(OURS, {})
    cells = ours.get("cells", [])
    errors = sum(c["error_count"] for c in cells) if cells else None
    targets.append(
        Target("all", "errors (non-2xx + socket)", errors, "= 0", _check(errors, lambda v: v == 0))
    )
    peak = max((c["peak_rss_mb"] for c in cells), default=None)
    targets.append(
        Target(
            "all",
            "server peak RSS (MB)",
            peak,
            f"< {RSS_LIMIT_MB:.0f}",
            _check(peak, lambda v: v < RSS_LIMIT_MB),
        )
    )
    return targets


GPU_CEILING_SHARE = 0.85  # issue 13, GPU: ours at the highest concurrency vs the ceiling
GPU_UPLOADS_PER_S = 3000.0  # issue 13, GPU: ResNet-50 at 224 on an H100, end to end


def _on_gpu(results: dict) -> bool:
    return any(str(c.get("device", "")).startswith("cuda")
               for c in results.get("ceiling", {}).values() if isinstance(c, dict))


def _gpu_targets(results: dict, high: int) -> list[Target]:
    """Issue 13's GPU targets, for every server of ours (variants included), per payload."""
    targets = []
    ours = [name for name in results.get("servers", {}) if name == OURS or name.startswith("ours-")]
    for payload in [p["name"] for p in results["payloads"]]:
        ceiling = results.get("ceiling", {}).get(payload) or {}
        for name in ours:
            cell = find_cell(results, name, payload, high)
            ips = cell["images_per_s"] if cell else None
            r = ratio(ips, ceiling.get("images_per_s"))
            targets.append(Target(payload, f"GPU {name} c={high} img/s vs ceiling", r,
                                  f">= {GPU_CEILING_SHARE}x",
                                  _check(r, lambda v: v >= GPU_CEILING_SHARE)))
            targets.append(Target(payload, f"GPU {name} c={high} uploads/s", ips,
                                  f">= {GPU_UPLOADS_PER_S:,.0f}",
                                  _check(ips, lambda v: v >= GPU_UPLOADS_PER_S)))
    return targets


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


NOISY_BACKGROUND_CORES = 0.25  # other processes busier than this during a cell: figures are off


def _header(results: dict) -> list[str]:
    cfg, meta = results["config"], results["meta"]
    lines = [
        f"Serving benchmark, {meta['date']} on {meta['machine']}, "
        f"revision {meta.get('revision', 'unknown')}.",
        f"Command: `{meta['command']}`  ",
        f"Checkpoint: {results['checkpoint']['arch']} at {results['checkpoint']['input_size']}px, "
        f"{cfg['duration_s']:g}s per cell (longer for slow servers) after {cfg['warmup_s']:g}s "
        f"warm-up; wrk with {cfg.get('wrk_threads', 1)} thread(s). CPU columns are average cores "
        f"busy (2.00 = both cores of a 2-core box): client = wrk + this harness, other = every "
        f"other process on the machine.",
        "",
    ]
    noisy = max(_background(results), default=0.0)
    if noisy > NOISY_BACKGROUND_CORES:
        lines += [
            f"**Warning: the machine was not quiet** (other processes used up to {noisy:.2f} "
            f"cores during a measurement): these figures are not comparable; rerun when idle.",
            "",
        ]
    return lines


def _background(results: dict) -> list[float]:
    values = [
        c.get("background_cpu_cores", 0.0)
        for key in ("ceiling", "ceiling_eager")
        for c in results.get(key, {}).values()
    ]
    for data in results.get("servers", {}).values():
        values += [c.get("background_cpu_cores", 0.0) for c in data.get("cells", [])]
    return values


def _payload_table(results: dict, payload: dict) -> list[str]:
    name = payload["name"]
    lines = [
        f"### {name} ({payload['count']} photos, {payload['mean_bytes'] / 1e3:,.0f} kB each)",
        "",
        "| server | c | img/s | p50 ms | p95 ms | p99 ms | errors | server CPU | peak RSS MB "
        "| client CPU | other CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in (("ceiling", "ceiling"), ("ceiling_eager", "eager ceiling")):
        ceiling = results.get(key, {}).get(name)
        if not ceiling:
            continue
        single = ceiling.get("single_image_latency") or {}
        engine = f"{ceiling['engine']}, " if ceiling.get("engine") else ""
        lines.append(
            f"| {label} (in-process, {engine}batch {ceiling['best_batch_size']}"
            f"{_threads(ceiling)}; latency at batch 1) "
            f"| - | {_fmt(ceiling['images_per_s'])} | {_fmt(single.get('p50_ms'))} "
            f"| {_fmt(single.get('p95_ms'))} | {_fmt(single.get('p99_ms'))} | - | - | - | - "
            f"| {_fmt(ceiling.get('background_cpu_cores'), 2)} |"
        )
    for server, data in results.get("servers", {}).items():
        if data.get("error"):
            lines.append(
                f"| {server} | - | failed: {data['error'].splitlines()[0]} | | | | | | | | |"
            )
            continue
        for cell in data.get("cells", []):
            if cell["payload"] != name:
                continue
            lat = cell["latency_ms"]
            client = cell["client_cpu_cores"] + cell.get("harness_cpu_cores", 0.0)
            lines.append(
                f"| {server} | {cell['concurrency']} | {_fmt(cell['images_per_s'])} "
                f"| {_fmt(lat['p50_ms'])} | {_fmt(lat['p95_ms'])} | {_fmt(lat['p99_ms'])} "
                f"| {cell['error_count']} | {_fmt(cell['server_cpu_cores'], 2)} "
                f"| {_fmt(cell['peak_rss_mb'], 0)} | {_fmt(client, 2)} "
                f"| {_fmt(cell.get('background_cpu_cores'), 2)} |"
            )
    return [*lines, ""]


def _threads(ceiling: dict) -> str:
    n = ceiling.get("decode_threads", 1)
    loops = ceiling.get("best_loops", 1)
    if ceiling.get("best_decode") == "device":
        return ", JPEGs decoded on the device"
    return (f" x {loops} parallel loops" if loops > 1 else "") + (
        f", {n} decode threads" if n > 1 else ""
    )


def render_markdown(results: dict, targets: list[Target]) -> str:
    lines = _header(results)
    for payload in results["payloads"]:
        lines += _payload_table(results, payload)
    lines += [
        "### Cold start (process start to ready)",
        "",
        "| server | seconds | notes |",
        "|---|---:|---|",
    ]
    for server, data in results.get("servers", {}).items():
        lines.append(
            f"| {server} | {_fmt(data.get('cold_start_s'), 2)} | {data.get('notes', '')} |"
        )
    lines += [
        "",
        "### Targets (issue 13)",
        "",
        "| payload | target | measured | goal | verdict |",
        "|---|---|---:|---|---|",
    ]
    for t in targets:
        digits = 0 if "RSS" in t.name or "errors" in t.name else 2
        lines.append(
            f"| {t.payload} | {t.name} | {_fmt(t.measured, digits)} | {t.goal} | {t.verdict} |"
        )
    return "\n".join(lines) + "\n"


def targets_as_json(targets: list[Target]) -> list[dict]:
    return [{**asdict(t), "verdict": t.verdict} for t in targets]


def plot_results(results: dict, path: Path) -> Path:
    """Images/s (top) and p99 latency (bottom) per concurrency, one column per payload."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    payloads = [p["name"] for p in results["payloads"]]
    servers = [s for s, d in results.get("servers", {}).items() if d.get("cells")]
    concurrencies = sorted(results["config"]["concurrency"])
    fig, axes = plt.subplots(2, len(payloads), figsize=(6 * len(payloads), 8), squeeze=False)
    width = 0.8 / max(1, len(servers))
    for col, payload in enumerate(payloads):
        top, bottom = axes[0][col], axes[1][col]
        for i, server in enumerate(servers):
            xs = [k + (i - (len(servers) - 1) / 2) * width for k in range(len(concurrencies))]
            cells = [find_cell(results, server, payload, c) for c in concurrencies]
            top.bar(xs, [c["images_per_s"] if c else 0 for c in cells], width, label=server)
            bottom.bar(
                xs,
                [(c["latency_ms"]["p99_ms"] or 0) if c else 0 for c in cells],
                width,
                label=server,
            )
        ceiling = results.get("ceiling", {}).get(payload)
        if ceiling:
            top.axhline(
                ceiling["images_per_s"],
                color="black",
                linestyle="--",
                label=f"ceiling (batch {ceiling['best_batch_size']})",
            )
        for ax, ylabel in ((top, "images/s"), (bottom, "p99 latency (ms, log)")):
            ax.set_xticks(range(len(concurrencies)), [f"c={c}" for c in concurrencies])
            ax.set_ylabel(ylabel)
            ax.grid(axis="y", alpha=0.3)
        bottom.set_yscale("log")
        top.set_title(payload)
        top.legend(fontsize=8)
    fig.suptitle(
        f"Serving {results['checkpoint']['arch']} on {results['meta']['machine']}", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
