"""The process's exit status says why it stopped (a supervisor restarts on a non-zero one)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from app.runtime import EXIT_WORKER_LOST
from tests.hostile.server import REPO, _service_env, free_port

# An inference worker that dies and cannot be restarted, one second after start-up.
LOSE_A_WORKER = textwrap.dedent(
    """
    import sys, time
    from app.batcher import MicroBatcher
    real_start = MicroBatcher.start

    async def start(self, *args, **kwargs):
        await real_start(self, *args, **kwargs)
        self.broken_after = time.monotonic() + 1

    async def cannot_restart(self, index):
        raise RuntimeError("simulated: the worker's warm-up fails again")

    MicroBatcher.start = start
    MicroBatcher.dead_workers = lambda self: (
        [0] if time.monotonic() > getattr(self, "broken_after", float("inf")) else []
    )
    MicroBatcher.restart_worker = cannot_restart
    from app.__main__ import main
    sys.exit(main([]))
    """
)


def test_a_lost_inference_worker_exits_with_70_not_as_a_clean_sigterm(service_checkpoint):
    """The service stops itself with SIGTERM for an orderly shutdown; uvicorn re-raised that
    signal once stopped, so the process died of it (-15: a clean stop to systemd, which then
    did not restart it) before main() returned 70."""
    env = _service_env(free_port(), service_checkpoint, {"drain_seconds": "0"})
    done = subprocess.run(
        [sys.executable, "-c", LOSE_A_WORKER], env=env, cwd=REPO, capture_output=True,
        text=True, timeout=120,
    )
    assert "could not restart an inference worker" in done.stderr
    assert done.returncode == EXIT_WORKER_LOST == 70
