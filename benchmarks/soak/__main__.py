"""``python -m benchmarks.soak run --out DIR``: the soak and overload benchmark of issue 8.

Starts the service (``python -m app`` on CPU), then measures: capacity (closed loop), starvation
(ordinary photos alone and beside two expensive files in flight), and an open-loop overload at
2x capacity with a realistic mix for ``--duration`` seconds. Writes ``soak.json`` and
``soak.md`` into ``--out``; exits 1 when any violation occurred (5xx other than 503, 503 without
Retry-After, 4xx on an ordinary photo, transport error or timeout), 2 when it cannot run.
``report DIR`` re-renders soak.md from soak.json.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

from benchmarks.soak.config import SoakConfig
from benchmarks.soak.mix import parse_mix
from benchmarks.soak.payloads import DEFAULT_CORPUS, CorpusMissing


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Z][A-Z0-9_]*", key):
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE (e.g. INVASIVE_X=1), got {text!r}")
    return key, value


def _mix(text: str) -> dict[str, float]:
    try:
        return parse_mix(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="measure and write soak.json / soak.md")
    d = SoakConfig(out=Path("."))
    run.add_argument("--out", type=Path, default=Path("benchmarks/results/soak"))
    run.add_argument(
        "--duration",
        type=float,
        default=d.duration_s,
        help="seconds of open-loop overload (default %(default)s)",
    )
    run.add_argument(
        "--checkpoint",
        type=Path,
        help="checkpoint to serve (default: build the demo one into --out)",
    )
    run.add_argument(
        "--env",
        type=_env_pair,
        action="append",
        default=[],
        metavar="NAME=V",
        help="extra environment for the service, e.g. INVASIVE_QUEUE_LIMIT=64",
    )
    run.add_argument("--capacity-seconds", type=float, default=d.capacity_seconds)
    run.add_argument("--capacity-concurrency", type=int, default=d.capacity_concurrency)
    run.add_argument(
        "--starvation-seconds",
        type=float,
        default=d.starvation_seconds,
        help="each of the unloaded and loaded halves (default %(default)s)",
    )
    run.add_argument(
        "--starvation-expensive",
        default="",
        help="comma list of corpus expensive-file names (default: its first two)",
    )
    run.add_argument("--warmup", type=float, default=d.warmup_s)
    run.add_argument("--rate", type=float, help="open-loop requests/s (default: factor x capacity)")
    run.add_argument("--rate-factor", type=float, default=d.rate_factor)
    run.add_argument(
        "--mix",
        type=_mix,
        default=None,
        help="KIND=WEIGHT,... of photo, phone, batch4, expensive, hostile "
        "(default photo=0.75,phone=0.1,batch4=0.05,expensive=0.05,hostile=0.05)",
    )
    run.add_argument("--seed", type=int, default=d.seed)
    run.add_argument("--max-inflight", type=int, default=d.max_inflight)
    run.add_argument(
        "--timeout", type=float, default=d.request_timeout_s, help="per-request timeout in seconds"
    )
    run.add_argument(
        "--client",
        choices=("http1", "httpx"),
        default=d.client,
        help="transport: the minimal HTTP/1.1 client (cheap in CPU) or httpx, to cross-check",
    )
    run.add_argument(
        "--corpus",
        default=DEFAULT_CORPUS,
        help="module with ordinary_photo(), expensive_files(), hostile_files()",
    )
    run.add_argument("--photos", type=Path, help="real JPEGs instead of the corpus's photos")
    report = sub.add_parser("report", help="re-render DIR/soak.md from DIR/soak.json")
    report.add_argument("dir", type=Path)
    return parser


def config_from_args(args: argparse.Namespace) -> SoakConfig:
    cfg = SoakConfig(
        out=args.out,
        duration_s=args.duration,
        checkpoint=args.checkpoint,
        env=dict(args.env),
        corpus=args.corpus,
        photo_dir=args.photos,
        warmup_s=args.warmup,
        capacity_seconds=args.capacity_seconds,
        capacity_concurrency=args.capacity_concurrency,
        starvation_seconds=args.starvation_seconds,
        starvation_expensive=tuple(n for n in args.starvation_expensive.split(",") if n),
        rate=args.rate,
        rate_factor=args.rate_factor,
        seed=args.seed,
        max_inflight=args.max_inflight,
        request_timeout_s=args.timeout,
        client=args.client,
    )
    if args.mix is not None:
        cfg.mix = args.mix
    return cfg


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    from benchmarks.soak.report import render_markdown

    if args.command == "report":
        results = json.loads((args.dir / "soak.json").read_text())
        (args.dir / "soak.md").write_text(render_markdown(results))
        print((args.dir / "soak.md").read_text())
        return 0
    from benchmarks.soak.runner import run

    cfg = config_from_args(args)
    try:
        results = run(cfg, argv)
    except (CorpusMissing, RuntimeError, subprocess.SubprocessError) as exc:
        print(f"benchmarks.soak: cannot run: {exc}", file=sys.stderr)
        return 2
    (cfg.out / "soak.json").write_text(json.dumps(results, indent=1))
    markdown = render_markdown(results)
    (cfg.out / "soak.md").write_text(markdown)
    print(markdown)
    count = results["violations"]["count"]
    verdict = results.get("phases", {}).get("starvation", {}).get("verdict", "n/a")
    print(
        f"wrote {cfg.out}/soak.json and soak.md; starvation p99 ratio: {verdict}; "
        f"{count} violation(s)",
        file=sys.stderr,
    )
    return 1 if count else 0


if __name__ == "__main__":
    sys.exit(main())
