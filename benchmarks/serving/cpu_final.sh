#!/usr/bin/env bash
# Issue 13's CPU figures side by side, in one command, on a quiet machine (about 8 minutes on
# the 2-vCPU box):
#   - in-process ceiling on the engine the service runs (auto: OpenVINO on CPU), batch 1 and
#     the best batch (1, 4, 8, 16, 32 x 1 or 2 loops), and eager PyTorch beside it for context;
#   - ours (invasive-api, defaults), LitServe (as benchmarks/serving configures it from its
#     docs) and naive FastAPI at c=1 and c=32 on 800x600 photos, with peak RSS and cold start;
#   - cold start: import and --help times of both entry points, process start to ready with an
#     empty and a warm engine cache (benchmarks/coldstart.py).
# Results: benchmarks/results/serving-final/results.{json,md,png} and
# benchmarks/results/coldstart/coldstart.json (OUT_ROOT overrides benchmarks/results).
#
#   bash benchmarks/serving/cpu_final.sh            # the real run
#   bash benchmarks/serving/cpu_final.sh --quick    # ~4 min smoke test into /tmp/cpu-final-quick;
#                                                   # its figures mean nothing
#
# Needs wrk (apt-get install -y wrk), LitServe (pip install -e '.[bench]') and the photos in
# ../shared/data/hogweed-dev/train (or PHOTOS=DIR). PAYLOADS=photo,phone adds 12 MP phone
# photos (about 4 more minutes).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
command -v "$PY" >/dev/null || PY=python3
[ -n "${OUT_ROOT:-}" ] && OUT_ROOT_SET=1
OUT_ROOT=${OUT_ROOT:-benchmarks/results}
PAYLOADS=${PAYLOADS:-photo}
photos=()
[ -n "${PHOTOS:-}" ] && photos=(--photos "$PHOTOS")

serving=(--out "$OUT_ROOT/serving-final" --payloads "$PAYLOADS" --concurrency 1,32
         --servers ours,litserve,naive "${photos[@]}")
coldstart=(--out "$OUT_ROOT/coldstart" --repeats 3 --bench-checkpoint)
if [ "${1:-}" = "--quick" ]; then  # outside the repository unless OUT_ROOT says otherwise
  [ -z "${OUT_ROOT_SET:-}" ] && OUT_ROOT=${QUICK_OUT_ROOT:-/tmp/cpu-final-quick}
  serving+=(--duration 3 --warmup 1 --ceiling-seconds 1 --ceiling-batch-sizes 1,16
            --photo-count 4)
  serving[1]="$OUT_ROOT/serving-final-quick"
  coldstart=(--out "$OUT_ROOT/coldstart-quick" --repeats 1)
fi

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
started=$(date +%s)
"$PY" -m benchmarks.serving run "${serving[@]}"
"$PY" -m benchmarks.coldstart "${coldstart[@]}"
"$PY" - "$OUT_ROOT" "${1:-}" <<'EOF'
import json, sys
from pathlib import Path

root, quick = Path(sys.argv[1]), sys.argv[2] == "--quick"
serving = json.loads((root / ("serving-final-quick" if quick else "serving-final") / "results.json").read_text())
cold = json.loads((root / ("coldstart-quick" if quick else "coldstart") / "coldstart.json").read_text())
print("\n== issue 13, CPU, side by side ==")
for name, c in serving["ceiling"].items():
    batch1 = (c.get("single_image_latency") or {}).get("p50_ms")
    print(f"{name}: ceiling {c['engine']}: best {c['images_per_s']:.1f} img/s "
          f"(batch {c['best_batch_size']} x {c['best_loops']}), batch 1 p50 {batch1:.1f} ms")
    eager = serving.get("ceiling_eager", {}).get(name)
    if eager:
        e1 = (eager.get("single_image_latency") or {}).get("p50_ms")
        print(f"{name}: ceiling eager: best {eager['images_per_s']:.1f} img/s, batch 1 p50 {e1:.1f} ms")
for server, data in serving["servers"].items():
    if data.get("error"):
        print(f"{server}: failed: {data['error'].splitlines()[0]}")
        continue
    for cell in data["cells"]:
        print(f"{server} {cell['payload']} c={cell['concurrency']}: {cell['images_per_s']:.1f} img/s, "
              f"p50 {cell['latency_ms']['p50_ms']} ms, peak RSS {cell['peak_rss_mb']:.0f} MB, "
              f"errors {cell['error_count']}")
    print(f"{server}: cold start {data.get('cold_start_s') or 0:.2f} s")
for t in serving.get("targets", []):
    print(f"target {t['payload']} {t['name']}: {t['measured']} {t['goal']} {t['verdict']}")
for label, r in cold["start_to_ready"].items():
    print(f"start to ready, {label}: empty cache {r['empty_cache']['median_ready_s']:.2f} s, "
          f"warm cache {r['warm_cache']['median_ready_s']:.2f} s (target <= 5 s)")
for name, imp in cold["imports"].items():
    print(f"{name}: import {imp['median_wall_s']:.2f} s, --help {cold['help_s'][name]:.2f} s")
EOF
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg); took $(( $(date +%s) - started )) s" >&2
