"""uvicorn's Server with a drain period between SIGTERM/SIGINT and closing the port.

uvicorn closes its listening socket before the lifespan shutdown runs, so a readiness flag turned
off there is never seen by a load balancer. Here the first signal only starts draining: readiness
answers 503 (predictions are still served) for ``drain_seconds``; then uvicorn's own graceful
shutdown runs: stop listening, finish the requests in flight, and the lifespan shutdown finishes
the queued work. A second signal skips the rest of the drain. While draining, every response
says ``Connection: close``, so clients do not reuse a connection the server is about to close.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("app")


# glibc raises its mmap threshold (up to 32 MiB) each time a large block is freed, after which
# image-sized buffers come from the heap and stay in a process's RSS once freed. A fixed
# threshold keeps every buffer of 1 MiB or more in its own mapping, returned to the OS on free,
# so a decode process's RSS falls back after each image. Only the decode processes get it (they
# are started fresh and read it from the environment): in this process it makes torch map and
# unmap its activation buffers on every forward pass (two short benchmarks/soak runs minutes
# apart on the 2-vCPU box: capacity 60.5 img/s with it here, 69.1 without).
MMAP_THRESHOLD_BYTES = 1024 * 1024


def return_decoders_freed_memory_to_the_os() -> None:
    """Fix glibc's mmap threshold in decode processes started from now on."""
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD_BYTES))


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain_seconds: float) -> None:
        super().__init__(config)
        self.drain_seconds = drain_seconds
        self._drain_timer: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        runtime = self.config.app.state.runtime
        if self._drain_timer is None and self.drain_seconds > 0 and runtime.accepting:
            logger.info(
                "received %s: readiness is 503 now; serving %.1fs more before closing the port",
                signal.Signals(sig).name,
                self.drain_seconds,
            )
            runtime.begin_drain()
            self._drain_timer = threading.Timer(
                self.drain_seconds, super().handle_exit, args=(sig, frame)
            )
            self._drain_timer.daemon = True
            self._drain_timer.start()
            return
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        super().handle_exit(sig, frame)


class CloseConnectionsWhileDraining:
    """ASGI middleware: ``Connection: close`` on every response once draining has begun."""

    def __init__(self, app: ASGIApp, runtime) -> None:  # noqa: ANN001 - app.runtime.ServiceRuntime
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and self.runtime.draining:
                message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            await send(message)

        await self.app(scope, receive, send_closing)
