#!/usr/bin/env bash
# The service on port 8765 with a 100 MiB budget and a 10 s admission wait, then two_batches.py.
set -euo pipefail
cd "$(dirname "$0")/../../.."
INVASIVE_PORT=8765 INVASIVE_MEMORY_BUDGET_MB=100 INVASIVE_ADMISSION_WAIT_S=10 \
  .venv/bin/python -m app >/tmp/admission-cycle-server.log 2>&1 &
server=$!
trap 'kill $server; wait $server || true' EXIT
for _ in $(seq 120); do curl -sf localhost:8765/health/ready >/dev/null && break; sleep 0.5; done
timeout 120 .venv/bin/python benchmarks/results/admission-cycle/two_batches.py
