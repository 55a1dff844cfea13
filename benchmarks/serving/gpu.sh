#!/usr/bin/env bash
# Serving benchmark on a CUDA machine in one short run (< 8 min); results in $OUT/serving-gpu.
#
# The device machines have PyTorch but no FastAPI, LitServe or wrk, and no network: prepare
# them here first with benchmarks/serving/gpu_prepare.sh, which fills three git-ignored folders
# that the run carries (.bench-wheels, .bench-debs, .bench-photos). Then, on the device:
#   bash benchmarks/serving/gpu.sh            # the real run
#   bash benchmarks/serving/gpu.sh --dry-run  # tiny cells; also works on a CPU-only box
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}

if [ -d .bench-wheels ] && ! "$PY" -c "import fastapi, litserve, pydantic_settings" 2>/dev/null; then
  echo "gpu.sh: installing the serving stack from .bench-wheels (offline)" >&2
  "$PY" -m pip install --quiet --no-index --find-links .bench-wheels \
    fastapi "uvicorn[standard]" pydantic-settings python-multipart pillow-heif \
    prometheus-client fastapi-offline pebble litserve
fi

if ! command -v wrk >/dev/null && [ -d .bench-debs ]; then
  # Unpacked beside, never over, the system: only PATH and the loader path point at it.
  root=/tmp/bench-debs-root
  for deb in .bench-debs/*.deb; do dpkg -x "$deb" "$root"; done
  export PATH="$root/usr/bin:$PATH"
  export LD_LIBRARY_PATH="$root/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

photos=()
if [ -d .bench-photos ] && [ ! -d ../shared/data/hogweed-dev/train ]; then
  photos=(--photos .bench-photos)
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
  --format=csv,noheader >&2 || true
exec "$PY" -m benchmarks.serving.gpu "${photos[@]}" "$@"
