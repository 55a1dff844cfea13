#!/usr/bin/env bash
# Zero-downtime model update for the scaled-out deployment (docker-compose.scale.yml): restarts
# the `api` replicas one at a time, each waiting for the one before to be ready again.
#
#   1. put the new checkpoint in the model volume (training writes it atomically; see README)
#   2. deploy/rolling-update.sh
#
# Why nothing is lost: `docker restart` sends SIGTERM; the service answers readiness 503 at
# once and keeps serving for INVASIVE_DRAIN_SECONDS, the proxy's readiness checks take the
# replica out of rotation within ~2 s, requests in flight finish, and the process exits. The
# container starts again on the same volume, loads the new checkpoint, warms up, and only then
# answers readiness 200 and rejoins; the next replica is not touched before that. A request that
# still meets a closing replica is retried by the proxy on another one. With one replica there
# is a gap while it restarts: scale to two first (`docker compose up -d --scale api=2`).
#
# A replica counts as back only once the proxy has it in rotation again (read from the proxy's
# read-only runtime API, inside the compose network): its own readiness is not enough, the proxy needs a
# DNS refresh and a health check to see it, and restarting the next replica before that would
# leave no replica in rotation for a moment.
#
# Settings (environment): COMPOSE (the compose command; `docker compose`, else `docker-compose`),
# SERVICE (api), PROXY_API (proxy:9999, the proxy's runtime API; empty: no proxy to wait for),
# STOP_TIMEOUT_S (45: drain + requests in flight, as compose's stop_grace_period),
# READY_TIMEOUT_S (300: model load and warm-up).
set -euo pipefail

if [ -z "${COMPOSE:-}" ]; then
    if docker compose version >/dev/null 2>&1; then COMPOSE="docker compose"; else COMPOSE="docker-compose"; fi
fi
SERVICE=${SERVICE:-api}
STOP_TIMEOUT_S=${STOP_TIMEOUT_S:-45}
READY_TIMEOUT_S=${READY_TIMEOUT_S:-300}
PROXY_API=${PROXY_API-proxy:9999}

say() { echo "rolling-update: $*"; }
die() { echo "rolling-update: error: $*" >&2; exit 1; }

# The replica's own readiness, from inside its container (replicas publish no port): prints
# the model_id when ready, exits 1 otherwise.
ready_model_id() {
    docker exec "$1" python -c '
import json, os, sys, urllib.request
url = "http://127.0.0.1:" + os.environ.get("INVASIVE_PORT", "8000") + "/health/ready"
try:
    print(json.load(urllib.request.urlopen(url, timeout=3))["model_id"])
except Exception:
    sys.exit(1)' 2>/dev/null
}

# Whether the proxy has this replica (by its address) in rotation, asked from inside the
# replica (it has python; the proxy image has no client). Exits 0 when it is running there.
in_rotation() {
    local addresses
    addresses=$(docker inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$1")
    docker exec -e PROXY_API="$PROXY_API" -e ADDRESSES="$addresses" "$1" python -c '
import os, socket, sys
host, port = os.environ["PROXY_API"].rsplit(":", 1)
with socket.create_connection((host, int(port)), timeout=3) as conn:
    conn.sendall(b"show servers state api\n")
    answer = b"".join(iter(lambda: conn.recv(65536), b"")).decode()
# "be_id be_name srv_id srv_name srv_addr srv_op_state ...": op state 2 is running.
rows = [line.split() for line in answer.splitlines() if line and not line.startswith("#")]
mine = set(os.environ["ADDRESSES"].split())
sys.exit(0 if any(len(r) > 5 and r[4] in mine and r[5] == "2" for r in rows) else 1)' 2>/dev/null
}

# shellcheck disable=SC2086  # COMPOSE may be two words
ids=$($COMPOSE ps -q "$SERVICE")
[ -n "$ids" ] || die "no running '$SERVICE' containers (is COMPOSE_FILE set as for 'up'?)"
count=$(wc -w <<<"$ids")
# shellcheck disable=SC2086
if [ -n "$PROXY_API" ] && [ -z "$($COMPOSE ps -q proxy 2>/dev/null)" ]; then
    say "no 'proxy' service running: not waiting for a proxy to take replicas back"
    PROXY_API=""
fi
[ "$count" -gt 1 ] || say "warning: only one '$SERVICE' replica: requests fail while it restarts"

# Refuse a missing or unreadable checkpoint before stopping anything.
# shellcheck disable=SC2086
$COMPOSE run --rm --no-deps model-check >/dev/null || die "the model volume's checkpoint is not servable; nothing was restarted"

n=0
for id in $ids; do
    n=$((n + 1))
    name=$(docker inspect --format '{{.Name}}' "$id"); name=${name#/}
    old=$(ready_model_id "$id" || echo "not-ready")
    start=$SECONDS
    docker restart --time "$STOP_TIMEOUT_S" "$id" >/dev/null
    stopped=$((SECONDS - start))
    until new=$(ready_model_id "$id"); do
        [ $((SECONDS - start)) -lt "$READY_TIMEOUT_S" ] \
            || die "$name not ready ${READY_TIMEOUT_S} s after restart; the other replicas were not touched (docker logs $name)"
        sleep 1
    done
    ready=$((SECONDS - start))
    if [ -n "$PROXY_API" ]; then
        until in_rotation "$id"; do
            [ $((SECONDS - start)) -lt "$READY_TIMEOUT_S" ] \
                || die "$name is ready but the proxy has not taken it back ($PROXY_API); the next replicas were not touched"
            sleep 1
        done
    fi
    say "[$n/$count] $name: $old -> $new (stopped in ${stopped} s, ready after ${ready} s, in rotation after $((SECONDS - start)) s)"
done
say "done: $count replica(s) restarted"
