"""``python -m benchmarks.serving run --out DIR``: the serving benchmark in one command.

``run --quick`` is a smoke test (short cells, one concurrency): it proves the harness works and
its figures mean nothing. ``report DIR`` re-renders results.md and results.png from results.json.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from benchmarks.serving.config import PAYLOAD_KINDS, SERVERS, RunConfig
from benchmarks.serving.fixtures import DEFAULT_PHOTO_DIR, PhotosMissing
from benchmarks.serving.loadgen import LoadGeneratorMissing


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def _names(allowed: tuple[str, ...]):
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(v.strip() for v in text.split(",") if v.strip())
        unknown = sorted(set(names) - set(allowed))
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {list(allowed)}")
        return names

    return parse


def _env_pair(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` for the service's environment: its INVASIVE_* settings, or a runtime knob
    such as OMP_WAIT_POLICY."""
    key, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Z][A-Z0-9_]*", key):
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE (e.g. INVASIVE_X=1), got {text!r}")
    return key, value


def _variant(text: str) -> tuple[str, dict[str, str]]:
    """``NAME:INVASIVE_A=1,INVASIVE_B=2`` -> (NAME, {INVASIVE_A: 1, INVASIVE_B: 2})."""
    name, sep, settings = text.partition(":")  # NAME:OMP_WAIT_POLICY=PASSIVE works too
    if not sep or not name or name in SERVERS or not settings:
        raise argparse.ArgumentTypeError(
            f"expected NAME:INVASIVE_X=V[,INVASIVE_Y=W] with a new NAME, got {text!r}"
        )
    return name, dict(_env_pair(pair) for pair in settings.split(","))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="measure every server and write results.{json,md,png}")
    run.add_argument("--out", type=Path, default=Path("benchmarks/results/serving"))
    run.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 3 s cells, c=8, 1 s ceiling per batch size",
    )
    run.add_argument("--duration", type=float, help="seconds measured per cell (default 15)")
    run.add_argument("--warmup", type=float, help="seconds of unmeasured load before each cell (3)")
    run.add_argument("--concurrency", type=_ints, help="comma list (default 1,8,32)")
    run.add_argument("--servers", type=_names(SERVERS), help=f"comma list of {','.join(SERVERS)}")
    run.add_argument(
        "--payloads", type=_names(PAYLOAD_KINDS), help=f"comma list of {','.join(PAYLOAD_KINDS)}"
    )
    run.add_argument("--photos", type=Path, default=DEFAULT_PHOTO_DIR, help="folder of JPEGs")
    run.add_argument("--photo-count", type=int, default=16)
    run.add_argument("--arch", default="resnet18")
    run.add_argument("--input-size", type=int, default=224)
    run.add_argument("--device", default="auto")
    run.add_argument("--precision", default="auto")
    run.add_argument("--max-batch-size", type=int, help="for ours and LitServe (service default)")
    run.add_argument("--batch-wait-ms", type=float, help="for ours and LitServe (service default)")
    run.add_argument(
        "--service-env",
        type=_env_pair,
        action="append",
        default=[],
        metavar="NAME=V",
        help="extra environment for our service: INVASIVE_* or e.g. OMP_WAIT_POLICY (repeatable)",
    )
    run.add_argument(
        "--variant",
        type=_variant,
        action="append",
        default=[],
        metavar="NAME:VAR=V,...",
        help="also measure our service with these settings, as server NAME (repeatable)",
    )
    run.add_argument("--litserve-workers", type=int, default=0, help="0: one per core")
    run.add_argument("--ceiling-batch-sizes", type=_ints, help="comma list (default 1,4,8,16,32)")
    run.add_argument("--ceiling-seconds", type=float, help="per batch size (default 4)")
    run.add_argument(
        "--ceiling-decode-on-device",
        action="store_true",
        help="the ceiling also decodes JPEGs on the model's device (nvJPEG on CUDA), as our "
        "service does there, and takes the better way (gpu.sh sets it)",
    )
    run.add_argument(
        "--wrk-threads",
        type=int,
        help="wrk's threads (default 1; thousands of uploads a second need more: gpu.sh uses 4)",
    )
    report = sub.add_parser("report", help="re-render results.md/png from DIR/results.json")
    report.add_argument("dir", type=Path)
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    cfg = RunConfig(
        out=args.out,
        photo_dir=args.photos,
        photo_count=args.photo_count,
        arch=args.arch,
        input_size=args.input_size,
        device=args.device,
        precision=args.precision,
        max_batch_size=args.max_batch_size,
        batch_wait_ms=args.batch_wait_ms,
        service_env=dict(args.service_env),
        variants=dict(args.variant),
        litserve_workers=args.litserve_workers,
    )
    if args.quick:
        cfg.duration_s, cfg.warmup_s, cfg.concurrency = 3.0, 1.0, (8,)
        cfg.ceiling_seconds, cfg.ceiling_batch_sizes, cfg.photo_count = 1.0, (1, 16), 8
    overrides = {
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "concurrency": args.concurrency,
        "servers": args.servers,
        "payload_kinds": args.payloads,
        "ceiling_batch_sizes": args.ceiling_batch_sizes,
        "ceiling_seconds": args.ceiling_seconds,
        "wrk_threads": args.wrk_threads,
        "ceiling_decode_on_device": args.ceiling_decode_on_device or None,
    }
    for name, value in overrides.items():
        if value is not None:
            setattr(cfg, name, value)
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "report":
        from benchmarks.serving.report import evaluate_targets, plot_results, render_markdown

        results = json.loads((args.dir / "results.json").read_text())
        (args.dir / "results.md").write_text(render_markdown(results, evaluate_targets(results)))
        plot_results(results, args.dir / "results.png")
        print((args.dir / "results.md").read_text())
        return 0
    from benchmarks.serving.runner import run

    cfg = config_from_args(args)
    try:
        run(cfg)
    except (LoadGeneratorMissing, PhotosMissing) as exc:
        print(f"benchmarks.serving: cannot run: {exc}", file=sys.stderr)
        return 2
    print((cfg.out / "results.md").read_text())
    print(f"wrote {cfg.out}/results.json, results.md, results.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
