#!/usr/bin/env bash
# Multi-GPU training speed: the same `fit` on generated photos with 1 GPU (one process) and with
# every GPU of this machine (torchrun, NCCL, DistributedDataParallel), training images/s side by
# side, in one run on one machine.
#
#   bash benchmarks/train_ddp_gpu.sh                    # all visible GPUs
#   NGPUS=4 EPOCHS=6 ARCH=resnet50 bash benchmarks/train_ddp_gpu.sh
#
# Three runs:
#   1 GPU          --batch-size BATCH                   the baseline
#   N GPUs         --batch-size BATCH (global)          same training job, BATCH/N per GPU
#   N GPUs, xN     --batch-size BATCH*N (global)        BATCH per GPU, as in the baseline
# images/s is the log's `images_per_s` (images of all processes / training seconds of the epoch,
# validation and checkpoint writes excluded), averaged over epochs 2.. (epoch 1 pays cuDNN
# autotuning and CUDA start-up).
#
# Needs a machine with >= 2 NVIDIA GPUs and the project's venv (.venv, or PYTHON=/path/python).
# Written without a GPU at hand: it has not been run on GPUs yet. A CPU smoke run of the script's
# plumbing (gloo, not NCCL): DEVICE=cpu NGPUS=2 IMAGES_PER_CLASS=24 SIZE=32 EPOCHS=2 BATCH=8
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
TORCHRUN=${TORCHRUN:-$(dirname "$PYTHON")/torchrun}
DEVICE=${DEVICE:-cuda}
NGPUS=${NGPUS:-$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())')}
ARCH=${ARCH:-resnet18}
SIZE=${SIZE:-160}                      # --image-size
BATCH=${BATCH:-64}                     # global batch of the first two runs
EPOCHS=${EPOCHS:-5}
IMAGES_PER_CLASS=${IMAGES_PER_CLASS:-3000}
OUT=${OUT:-$(mktemp -d -t ddp-bench-XXXXXX)}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}  # the same CPU threads per process in every run

if [ "$NGPUS" -lt 2 ]; then
    echo "needs at least 2 GPUs (found $NGPUS); set NGPUS to override" >&2
    exit 1
fi
if [ $((BATCH % NGPUS)) -ne 0 ]; then
    echo "BATCH=$BATCH must be a multiple of NGPUS=$NGPUS (the global batch is split evenly)" >&2
    exit 1
fi

echo "writing $((2 * IMAGES_PER_CLASS)) generated photos (320x240) to $OUT/data"
"$PYTHON" -c "from training.demo import write_demo_dataset
write_demo_dataset('$OUT/data', images_per_class=$IMAGES_PER_CLASS, size=(320, 240))"

FIT=(fit --data "$OUT/data" --arch "$ARCH" --weights none --image-size "$SIZE"
     --epochs "$EPOCHS" --patience "$EPOCHS" --val-fraction 0.1 --workers 4 --device "$DEVICE")

run() {  # label, then the command
    local label=$1
    shift
    echo "=== $label: $*"
    local start=$SECONDS
    "$@" > "$OUT/$label.out" 2>&1 || { tail -30 "$OUT/$label.out"; exit 1; }
    echo "    $((SECONDS - start)) s wall"
}

run 1gpu "$PYTHON" -m training "${FIT[@]}" --batch-size "$BATCH" \
    --output "$OUT/1gpu/model.safetensors"
run "${NGPUS}gpu" "$TORCHRUN" --standalone --nproc_per_node="$NGPUS" -m training "${FIT[@]}" \
    --batch-size "$BATCH" --output "$OUT/${NGPUS}gpu/model.safetensors"
run "${NGPUS}gpu-x${NGPUS}batch" "$TORCHRUN" --standalone --nproc_per_node="$NGPUS" \
    -m training "${FIT[@]}" --batch-size $((BATCH * NGPUS)) \
    --output "$OUT/${NGPUS}gpu-x${NGPUS}batch/model.safetensors"

"$PYTHON" - "$OUT" 1gpu "${NGPUS}gpu" "${NGPUS}gpu-x${NGPUS}batch" <<'EOF'
import json
import statistics
import sys
from pathlib import Path

out, labels = Path(sys.argv[1]), sys.argv[2:]
rows = []
for label in labels:
    events = [json.loads(line) for line in (out / label / "model.log.jsonl").read_text().splitlines()]
    start = next(e for e in events if e["event"] == "start")
    epochs = [e for e in events if e["event"] == "epoch"]
    timed = epochs[1:] or epochs
    rate = statistics.fmean(e["images_per_s"] for e in timed)
    best = max(e["val_roc_auc"] or 0.0 for e in epochs)
    rows.append((label, start["world_size"], start["config"]["batch_size"], rate, best))
base = rows[0][3]
print(f"\n{'run':<18}{'processes':>10}{'global batch':>14}{'images/s':>11}{'speed-up':>10}"
      f"{'best val AUC':>14}")
for label, world, batch, rate, best in rows:
    print(f"{label:<18}{world:>10}{batch:>14}{rate:>11.1f}{rate / base:>9.2f}x{best:>14.4f}")
print(f"\nlogs and checkpoints in {out}")
EOF
