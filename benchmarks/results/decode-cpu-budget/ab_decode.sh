#!/usr/bin/env bash
# The A/B as it ran (2026-11-28, 18:27-18:31 UTC): the decode budget in wall time (82e4ab7,
# checked out with `git worktree add /tmp/old 82e4ab7`, benchmarks/memory_reserve.py copied in
# from the new tree so both arms measure alike) against CPU time (the working tree that became
# the next commit), alternating arms, 3 rounds, one busy loop beside each arm.
set -e
for r in 1 2 3; do
  for arm in old new; do
    root=/work/main; [ $arm = old ] && root=/tmp/old
    echo "== round $r arm $arm $(date -u +%H:%M:%S) load $(cut -d' ' -f1 /proc/loadavg)"
    (cd $root && /work/main/.venv/bin/python benchmarks/memory_reserve.py --out /tmp/abdec2/$arm-r$r \
       --reserves 12.5 --rounds 1 --seconds 20 --busy-processes 1 \
       --checkpoint /work/main/models/model.safetensors) 2>&1 | tail -4
  done
done
