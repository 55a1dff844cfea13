#!/usr/bin/env bash
# Two revisions of the service side by side, interleaved, on one checkpoint: wrk at c=32 (10 s
# after 3 s of warm-up) and c=1 (5 s) against /v1/predict with hogweed-dev photos, ROUNDS times
# each, alternating BASE and HEAD so that drift of the machine hits both. A quick check that a
# change costs nothing measurable; the figures to quote come from cpu_final.sh.
#
#   bash benchmarks/serving/ab_revisions.sh BASE_REV CHECKPOINT [ROUNDS]
#
# BASE_REV is checked out into a temporary git worktree and run with this checkout's venv; HEAD
# is the working tree. Needs wrk and ../shared/data/hogweed-dev (or PHOTOS=DIR). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/../.."
BASE=$1 CHECKPOINT=$(realpath "$2") ROUNDS=${3:-2}
PY=$PWD/.venv/bin/python
PHOTOS=${PHOTOS:-../shared/data/hogweed-dev/train}
WORK=$(mktemp -d)
trap 'git worktree remove --force "$WORK/base" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
git worktree add -q --detach "$WORK/base" "$BASE"
mkdir "$WORK/bodies"
i=0
for photo in $(ls "$PHOTOS"/*.jpg | head -8); do
  { printf -- '--b0undary\r\nContent-Disposition: form-data; name="file"; filename="p.jpg"\r\n'
    printf 'Content-Type: image/jpeg\r\n\r\n'; cat "$photo"; printf '\r\n--b0undary--\r\n'
  } > "$WORK/bodies/$(printf 'body_%03d.bin' $i)"
  i=$((i + 1))
done
LUA=$PWD/benchmarks/serving/wrk_multipart.lua
drive() {  # PORT CONNECTIONS SECONDS -> requests/s
  wrk -t1 -c"$2" -d"$3"s -s "$LUA" "http://127.0.0.1:$1/v1/predict" -- "$WORK/bodies" "$i" \
    "multipart/form-data; boundary=b0undary" | awk '/Requests\/sec/ {print $2} /Non-2xx/ {print "ERRORS: " $0}'
}
measure() {  # NAME TREE PORT
  (cd "$2" && exec env INVASIVE_CHECKPOINT="$CHECKPOINT" INVASIVE_PORT="$3" INVASIVE_LOG_LEVEL=warning \
     INVASIVE_DRAIN_SECONDS=0 "$PY" -m app > "$WORK/$1.log" 2>&1) &
  local pid=$!
  for _ in $(seq 1 240); do curl -fs "localhost:$3/health/ready" >/dev/null && break; sleep 0.5; done
  curl -fs "localhost:$3/health/ready" >/dev/null || { echo "$1 did not start:"; tail "$WORK/$1.log"; exit 1; }
  drive "$3" 32 3 > /dev/null
  echo "$1 c=32 $(drive "$3" 32 10 | tr '\n' ' ') c=1 $(drive "$3" 1 5 | tr '\n' ' ')"
  kill -TERM $pid; wait $pid 2>/dev/null || true
}
echo "base $(git rev-parse --short "$BASE"), head $(git rev-parse --short HEAD)$(git diff --quiet || echo ' + working tree'); load $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
  measure base "$WORK/base" 18781
  measure head "$PWD" 18782
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
