#!/usr/bin/env bash
# Every GPU check of issues 12 and 13 in one run on a lent CUDA machine, inside one time budget.
#
# Prepare here first (fills the git-ignored folders the run carries):
#   bash benchmarks/serving/gpu_prepare.sh
# Then on the device, carrying .bench-wheels .bench-debs .bench-photos:
#   bash benchmarks/gpu_session.sh               # BUDGET_S=540 seconds in all
#   DRY_RUN=1 bash benchmarks/gpu_session.sh     # the same steps, tiny, on a CPU-only box
#
# Steps, most important first; each has its own time limit and is skipped when too little of
# the budget is left, so a slow step never costs the ones after it their results:
#   tests     the CUDA tests (tests/gpu): model on GPU vs CPU, engines, the service on CUDA
#   serving   benchmarks/serving/gpu.sh: ours (cudagraphs + nvJPEG; 1 process, 6 and as many as
#             fit) vs the ceiling vs LitServe
#   c1        benchmarks/serving/c1_trace.py: a lone request's time, stage by stage (only when
#             STEPS names it)
#   engines   benchmarks/gpu_engines.py: eager fp32/bf16, cudagraphs, onnxruntime, compile
#   decode    benchmarks/gpu_decode.py: nvJPEG on the GPU vs the service's CPU decoding
#   kaggle    benchmarks/kaggle_gpu_recipe.sh: training images/s of the Kaggle recipe
#   compile   torch.compile beside eager (its cold compile alone takes minutes; only when STEPS
#             names it)
# Everything lands in $OUT (session.log, one .md per step, results.tar.gz with all files, the
# GPU memory samples gpu_memory.csv among them).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHON=${PYTHON:-python3} PYTHONUNBUFFERED=1
OUT=${OUT:-$(mktemp -d -t gpu-session-XXXXXX)}
WORK=$(mktemp -d -t gpu-session-work-XXXXXX)
BUDGET_S=${BUDGET_S:-540}
# All five steps need about 11 minutes on an H100 with 16 host cores (first run, 2026-11-27:
# tests 22 s, serving about 6 min, engines 40 s without compile, decode 35 s, kaggle about 2 min),
# more than one 10-minute call: split them, e.g. STEPS="tests serving" then the rest.
STEPS=${STEPS:-tests serving engines decode kaggle}
DRY_RUN=${DRY_RUN:-}
LOG="$OUT/session.log"
mkdir -p "$OUT"
start=$SECONDS

say() { echo "[$(date -u +%H:%M:%S) +$((SECONDS - start))s] $*" | tee -a "$LOG" >&2; }

# step NAME LIMIT_S MIN_S COMMAND...: run with a limit, trimmed to what is left of the budget
step() {
  local name=$1 limit=$2 min=$3
  shift 3
  case " $STEPS " in *" $name "*) ;; *) return ;; esac
  local left=$((BUDGET_S - (SECONDS - start)))
  if [ "$left" -lt "$min" ]; then
    say "SKIP $name: ${left}s of the budget left, needs ${min}s"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  say "START $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout -k 10 "$limit" "$@" > "$WORK/$name.log" 2>&1
  local rc=$?
  say "END $name rc=$rc in $((SECONDS - t0))s$([ "$rc" = 124 ] && echo ' (TIMED OUT)')"
  tail -n 25 "$WORK/$name.log" | sed 's/^/    /' | tee -a "$LOG" >&2
}

say "gpu session: budget ${BUDGET_S}s, work in $WORK${DRY_RUN:+ (DRY RUN)}"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader || true
  nproc
  "$PYTHON" -c "import sys, torch, torchvision; print(sys.version.split()[0], torch.__version__,
torchvision.__version__, torch.version.cuda, torch.cuda.is_available() and
torch.cuda.get_device_name(0))"
  git rev-parse --short HEAD 2>/dev/null || true
} 2>&1 | tee -a "$LOG" >&2

if [ -d .bench-wheels ] && ! "$PYTHON" -c "import fastapi, litserve, pydantic_settings, pebble" \
    2>/dev/null; then
  say "installing the serving stack from .bench-wheels (offline)"
  "$PYTHON" -m pip install --quiet --no-index --find-links .bench-wheels fastapi \
    "uvicorn[standard]" pydantic-settings python-multipart pillow-heif prometheus-client \
    fastapi-offline pebble litserve 2>&1 | tail -5 | tee -a "$LOG" >&2
fi

# GPU memory every 2 s, in all and per process: what each server process holds after warm-up
# (8 processes did not fit an H100's 80 GB before the one-side-stream fix), and whether a step
# left memory behind for the next.
if command -v nvidia-smi >/dev/null; then
  (
    while sleep 2; do
      now=$(date -u +%H:%M:%S)
      nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader,nounits \
        | sed "s/^/$now total,/"
      nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits \
        | sed "s/^/$now proc,/"
    done > "$WORK/gpu_memory.csv" 2>/dev/null
  ) &
  sampler=$!
  trap 'kill $sampler 2>/dev/null' EXIT
fi

if [ -n "$DRY_RUN" ]; then
  step tests 120 10 "$PYTHON" -m pytest tests/gpu -q -p no:cacheprovider
  step serving 300 60 bash benchmarks/serving/gpu.sh --dry-run --out "$WORK/serving"
  step engines 150 20 "$PYTHON" -m benchmarks.gpu_engines --dry-run --out "$WORK/engines" \
    --engines eager-fp32,eager,cudagraphs
  step decode 60 20 "$PYTHON" -m benchmarks.gpu_decode --dry-run --out "$WORK/decode"
  step kaggle 120 30 env OUT="$WORK/kaggle" DEVICE=cpu ARCH=resnet18 COUNT=24 SIZE=32 EPOCHS=2 \
    BATCH=8 WORKERS=2 bash benchmarks/kaggle_gpu_recipe.sh
else
  step tests 90 40 "$PYTHON" -m pytest tests/gpu -v -s -p no:cacheprovider --timeout 80 \
    -k "not compile"
  # LitServe, ours, ours-6proc and (on a GPU with room) ours-10proc, a two-way ceiling: ~6-7 min
  step serving 420 150 bash benchmarks/serving/gpu.sh --out "$WORK/serving"
  # where a lone request's time goes on a GPU host (c=1: 3.9 ms against 1.8 in-process, H200)
  step c1 90 45 "$PYTHON" -m benchmarks.serving.c1_trace --photos .bench-photos --requests 400 \
    --env INVASIVE_ENGINE=cudagraphs
  # compile last and apart: inductor's cold compile of resnet50 outlasted 110 s on the H100
  step engines 90 40 "$PYTHON" -m benchmarks.gpu_engines --out "$WORK/engines" \
    --engines eager-fp32,eager,cudagraphs,onnxruntime
  step decode 45 20 "$PYTHON" -m benchmarks.gpu_decode --out "$WORK/decode"
  step kaggle 170 100 env OUT="$WORK/kaggle" COUNT=1024 EPOCHS=3 WORKERS=12 \
    bash benchmarks/kaggle_gpu_recipe.sh
  step compile 240 200 "$PYTHON" -m benchmarks.gpu_engines --out "$WORK/compile" \
    --engines eager,compile
fi

[ -n "${sampler:-}" ] && kill "$sampler" 2>/dev/null
# What comes back: at most 8 files (the device's limit), no deeper than two folders: the log,
# each step's table, and everything else in one archive.
cp "$WORK/tests.log" "$OUT/tests.log" 2>/dev/null
cp "$WORK/c1.log" "$OUT/c1.log" 2>/dev/null
for pair in serving:serving engines:engines decode:decode compile:compile; do
  src=$WORK/${pair%%:*}/results.md
  [ -f "$src" ] && cp "$src" "$OUT/${pair#*:}.md"
done
[ -f "$WORK/kaggle/kaggle_gpu_recipe.json" ] && cp "$WORK/kaggle/kaggle_gpu_recipe.json" "$OUT/"
rm -rf "$WORK/kaggle/data"  # generated photos: not worth carrying back
tar -czf "$OUT/results.tar.gz" -C "$WORK" --exclude='*.safetensors' --exclude='*.bin' . \
  2>>"$LOG"
say "done in $((SECONDS - start))s; $(ls "$OUT" | tr '\n' ' ')"
