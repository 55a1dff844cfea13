"""uvicorn's Server with a drain period between SIGTERM/SIGINT and closing the port.

uvicorn closes its listening socket before the lifespan shutdown runs, so a readiness flag turned
off there is never seen by a load balancer. Here the first signal only starts draining: readiness
answers 503 (predictions are still served) for ``drain_seconds``; then uvicorn's own graceful
shutdown runs: stop listening, finish the requests in flight, and the lifespan shutdown finishes
the queued work. A second signal skips the rest of the drain. While draining, every response
says ``Connection: close``, so clients do not reuse a connection the server is about to close.

Closing a listening socket resets the connections in its accept queue: clients that connected
and sent their request just before the port closed would lose it (seen in CI as a ReadError).
So before uvicorn closes the port, :func:`stop_new_connections` makes the kernel drop new SYNs
(such a client retries its SYN about a second later and is refused then, having sent nothing),
the accept queue empties into the server, and connections accepted without a request yet get a
moment to send it; only then does uvicorn's shutdown close the port and idle connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import struct
import threading
import time
from types import FrameType

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.head_timeout import close_late_heads

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


SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)  # Linux; Python does not name it
# A classic-BPF socket filter. On a TCP socket it sees the segment from its TCP header on; byte 13
# holds the flags. Drop a SYN without ACK (a new connection); pass everything else, so handshakes
# already under way complete and join the accept queue.
_DROP_NEW_SYNS = [
    (0x30, 0, 0, 13),  # ldb [13]
    (0x54, 0, 0, 0x12),  # and #(SYN|ACK)
    (0x15, 0, 1, 0x02),  # jeq #SYN, next, skip one
    (0x06, 0, 0, 0),  # ret #0: drop
    (0x06, 0, 0, 0xFFFFFFFF),  # ret #-1: keep the whole segment
]
SETTLE_MIN_S = 0.1  # a handshake that was under way when new SYNs stopped completes in one RTT
SETTLE_MAX_S = 1.0  # bounds each of the two waits before the port closes
CLOSING_MAX_S = 2 * SETTLE_MAX_S  # the most closing the port adds to a shutdown


def stop_new_connections(sock: socket.socket) -> bool:
    """Make the kernel drop new connection attempts to a listening socket; False if it can't."""
    code = b"".join(struct.pack("HBBI", *insn) for insn in _DROP_NEW_SYNS)
    program = ctypes.create_string_buffer(code)
    fprog = struct.pack("HL", len(_DROP_NEW_SYNS), ctypes.addressof(program))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    except OSError as exc:  # not Linux, or a socket type that takes no filter
        logger.debug("cannot stop new connections before closing the port: %s", exc)
        return False
    return True


def accept_queue_length(sock: socket.socket) -> int:
    """Connections the kernel completed that the server has not accepted yet (Linux TCP_INFO)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 32)
    return struct.unpack_from("I", info, 24)[0]  # tcpi_unacked: a listener's accept queue


OPEN_FILES_WANTED = 65536


def raise_open_file_limit(wanted: int = OPEN_FILES_WANTED) -> tuple[int, int]:
    """Raise this process's soft limit on open files toward its hard limit; (before, after).

    Every connection holds a descriptor, and many desktops still start programs with a soft
    limit of 1,024 (under a hard limit hundreds of times higher): 1,100 silent connections then
    made the service refuse everyone else until they went away (measured, 2026-11-28).
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):  # a sandbox may refuse it: keep what we have
            return soft, soft
        return soft, target
    return soft, soft


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
        if runtime.exit_code:
            # The service signalled itself to stop (app.runtime: an inference worker lost for
            # good). uvicorn re-raises every signal it caught once it has stopped, so the
            # process would die of SIGTERM (status -15, a clean stop to systemd) before main()
            # returns the exit code that says why.
            with contextlib.suppress(AttributeError, ValueError):
                self._captured_signals.remove(sig)

    async def on_tick(self, counter: int) -> bool:
        if counter % 10 == 0:  # once a second (uvicorn ticks every 0.1 s)
            close_late_heads(self.server_state.connections, asyncio.get_running_loop().time())
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if not self.force_exit:
            await self._close_the_door_gently()
        # Uploads still arriving answer 503 now; requests with their bodies in finish within
        # their request timeout, which the graceful-shutdown timeout covers (app.__main__).
        self.config.app.state.runtime.uploads.end_all()
        await super().shutdown(sockets)

    async def _close_the_door_gently(self) -> None:
        """Let every client that already connected get its request in before the port closes."""
        listening = [sock for server in self.servers for sock in server.sockets]
        started = time.monotonic()
        if listening and all(stop_new_connections(sock) for sock in listening):  # type: ignore[arg-type]
            await asyncio.sleep(SETTLE_MIN_S)
            while time.monotonic() - started < SETTLE_MAX_S:
                with contextlib.suppress(OSError):
                    if not any(accept_queue_length(sock) for sock in listening):  # type: ignore[arg-type]
                        break
                await asyncio.sleep(0.01)
        # uvicorn's shutdown closes connections with no request under way: give the ones accepted
        # a moment ago time to send theirs (h11 starts a request cycle once the headers are in).
        waited = time.monotonic()
        while time.monotonic() - waited < SETTLE_MAX_S and any(
            getattr(conn, "cycle", True) is None for conn in self.server_state.connections
        ):
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - started
        logger.info("stopped taking connections in %.2fs; closing the port", elapsed)


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
