#!/usr/bin/env bash
# The Kaggle recipe's training speed on one GPU (issue 12), on generated photos of the Kaggle
# training set's count and size (2,295 photos of 1154x866), so it runs on a machine with no
# network and no Kaggle data. README "The Kaggle recipe on a GPU" gives the recipe itself.
#
#   bash benchmarks/kaggle_gpu_recipe.sh                 # resnet50, 288 px, 3 timed epochs
#   SIZE=320 BATCH=96 bash benchmarks/kaggle_gpu_recipe.sh
#
# Runs the real `fit` (decode cache, bf16 autocast, channels_last) for EPOCHS epochs with
# --weights none (ImageNet weights change the numbers, not the speed) and prints: the one-off
# decode of the photos, training images/s (epochs 2.., epoch 1 pays cuDNN autotuning), validation
# seconds per epoch, and the expected wall time of the recipe's 5 folds x RECIPE_EPOCHS from
# them. JSON in $OUT/kaggle_gpu_recipe.json.
#
# Written without a GPU at hand: not run on one yet. CPU smoke run of the plumbing:
#   DEVICE=cpu ARCH=resnet18 COUNT=24 SIZE=32 EPOCHS=2 BATCH=8 bash benchmarks/kaggle_gpu_recipe.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
DEVICE=${DEVICE:-cuda}
ARCH=${ARCH:-resnet50}
SIZE=${SIZE:-288}
BATCH=${BATCH:-64}
EPOCHS=${EPOCHS:-3}               # timed here
RECIPE_EPOCHS=${RECIPE_EPOCHS:-15}  # per fold in the recipe
FOLDS=${FOLDS:-5}
COUNT=${COUNT:-2295}              # photos in Kaggle's train/
WORKERS=${WORKERS:-8}
OUT=${OUT:-$(mktemp -d -t kaggle-recipe-XXXXXX)}

UNIQUE=${UNIQUE:-64}              # distinct photos generated; the others are hard links to them
echo "writing $COUNT photos (1154x866, as Kaggle's; $UNIQUE generated, linked) to $OUT/data"
# Generating costs ~0.07 s a photo (72 s for 1,024, which used up the first H100 try's limit);
# a linked copy costs decoding and training what a new photo does.
"$PYTHON" - "$OUT/data" "$COUNT" "$UNIQUE" <<'PY'
import csv
import os
import sys
from pathlib import Path

from training.demo import write_demo_dataset

root, count, unique = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
unique = max(2, min(unique, count) // 2 * 2)
write_demo_dataset(root, images_per_class=unique // 2, size=(1154, 866))
generated = list(csv.reader((root / "train_labels.csv").open()))[1:]
rows = list(generated)
for i in range(unique, count):
    name, label = generated[i % unique]
    os.link(root / "train" / f"{name}.jpg", root / "train" / f"{i + 1}.jpg")
    rows.append([str(i + 1), label])
with (root / "train_labels.csv").open("w", newline="") as f:
    csv.writer(f).writerows([("name", "invasive"), *rows])
PY

start=$SECONDS
"$PYTHON" -m training fit --data "$OUT/data" --output "$OUT/model.safetensors" --arch "$ARCH" \
    --weights none --image-size "$SIZE" --batch-size "$BATCH" --epochs "$EPOCHS" \
    --patience "$EPOCHS" --workers "$WORKERS" --device "$DEVICE" --json \
    > "$OUT/fit.json" 2> "$OUT/fit.log" || { tail -30 "$OUT/fit.log"; exit 1; }
wall=$((SECONDS - start))

"$PYTHON" - "$OUT" "$wall" "$FOLDS" "$RECIPE_EPOCHS" "$COUNT" <<'EOF'
import json
import statistics
import sys
from pathlib import Path

out, wall, folds, recipe_epochs, count = Path(sys.argv[1]), *map(int, sys.argv[2:])
events = [json.loads(line) for line in (out / "model.log.jsonl").read_text().splitlines()]
start = next(e for e in events if e["event"] == "start")
epochs = [e for e in events if e["event"] == "epoch"]
timed = epochs[1:] or epochs
rate = statistics.fmean(e["images_per_s"] for e in timed)
val_s = statistics.fmean(e["val_s"] for e in timed)
train_s = statistics.fmean(e["train_s"] for e in timed)
setup_s = wall - sum(e["epoch_s"] for e in epochs)  # imports, decode cache, model build
# A fold trains on (1 - 1/folds) of the photos, less the inner validation split (20 %).
fold_train = count * (1 - 1 / folds) * 0.8
per_epoch = fold_train / rate + val_s
expected = setup_s + folds * recipe_epochs * per_epoch
result = {"arch": start["config"]["arch"], "image_size": start["config"]["image_size"],
          "batch_size": start["config"]["batch_size"], "device": start["device"],
          "precision": start["precision"], "train_images_per_s": round(rate, 1),
          "train_s_per_epoch": round(train_s, 2), "val_s_per_epoch": round(val_s, 2),
          "setup_s": setup_s, "wall_s": wall,
          "expected_recipe_s": round(expected), "recipe": {"folds": folds,
                                                           "epochs": recipe_epochs}}
(out / "kaggle_gpu_recipe.json").write_text(json.dumps(result, indent=2))
print(json.dumps(result, indent=2))
EOF
