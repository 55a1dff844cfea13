#!/usr/bin/env bash
# Run on the development box, before a GPU run: fills the git-ignored folders gpu.sh carries.
#   .bench-wheels  wheels of the serving stack for the device's Python (PY_VERSION, default 3.12)
#   .bench-debs    wrk and its LuaJIT library (Debian packages, unpacked there without root)
#   .bench-photos  16 benchmark photos (the device does not get ../shared)
# Then on the device: carry those three folders and run `bash benchmarks/serving/gpu.sh`.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
PY_VERSION=${PY_VERSION:-3.12}

for d in .bench-wheels .bench-debs .bench-photos; do
  grep -qxF "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude
done

"$PY" -m pip download --quiet --dest .bench-wheels --only-binary=:all: \
  --python-version "$PY_VERSION" --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  fastapi "uvicorn[standard]" pydantic-settings python-multipart pillow-heif \
  prometheus-client fastapi-offline pebble litserve

mkdir -p .bench-debs
(cd .bench-debs && apt-get download wrk libluajit-5.1-2)

mkdir -p .bench-photos
find ../shared/data/hogweed-dev/train -name '*.jpg' | sort | head -16 | xargs -I{} cp {} .bench-photos/
du -sh .bench-wheels .bench-debs .bench-photos
