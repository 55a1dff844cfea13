#!/bin/bash
# external liveness probe + accept-queue snapshot during a soak
PORT=""
for i in $(seq 1 120); do
  PORT=$(ss -ltnp | grep 'python' | grep -v ':8765' | grep -o '127.0.0.1:[0-9]*' | head -1 | cut -d: -f2)
  [ -n "$PORT" ] && curl -sf -m 2 localhost:$PORT/health/live >/dev/null && break
  sleep 1
done
echo "port $PORT"
while [ ! -f /tmp/soak-diag.done ]; do
  t=$(date +%s.%N)
  q=$(ss -ltn "sport = :$PORT" | awk 'NR==2{print $2}')
  c=$(ss -tn state established "sport = :$PORT" | wc -l)
  r=$(curl -s -o /dev/null -m 20 -w '%{time_connect} %{time_starttransfer} %{time_total} %{http_code}' localhost:$PORT/health/live)
  echo "$t q=$q est=$c $r"
  sleep 0.5
done
