"""``invasive-api`` / ``python -m app``: check the checkpoint, then serve with uvicorn.

A missing or unreadable checkpoint, or an impossible device/precision, prints one line to stderr
and exits with status 2 before uvicorn starts, so the operator sees the cause, not a traceback.

SIGTERM drains (see :class:`app.server.DrainingServer`): readiness turns 503 at once, requests
keep being served for ``INVASIVE_DRAIN_SECONDS``, then uvicorn stops listening, finishes the
requests in flight and the queued work, and exits.
"""

from __future__ import annotations

import argparse
import logging
import math
import socket
import sys

from pydantic import ValidationError

from app.config import Settings

EXIT_BAD_CONFIG = 2


def _fail(message: str) -> int:
    print(f"invasive-api: error: {message}", file=sys.stderr)
    return EXIT_BAD_CONFIG


def preflight(settings: Settings) -> str | None:
    """Why the service cannot start with ``settings``, or None.

    Checks the checkpoint's metadata and its tensors' names and shapes against the architecture
    (``check_checkpoint``: the header only, the network built on the meta device): a file whose
    weights do not fit its architecture fails here with one line, not as a traceback from
    uvicorn's lifespan, without loading the weights twice (the runtime loads them).
    """
    from model.checkpoint import CheckpointError, check_checkpoint
    from model.inference import resolve_device, resolve_precision

    try:
        check_checkpoint(settings.checkpoint)
    except CheckpointError as exc:
        hint = " (run `make demo` or `invasive-train demo --output PATH` to build a demo one)"
        return f"{exc}{hint if 'not found' in str(exc) else ''}"
    try:
        resolve_precision(settings.precision, resolve_device(settings.device))
    except (ValueError, RuntimeError) as exc:
        return str(exc)
    return None


def settings_help() -> str:
    """Every INVASIVE_* variable with its default and meaning, for ``--help``."""
    lines = ["settings (environment variables):"]
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory else field.default
        lines.append(f"  INVASIVE_{name.upper():<20} default {default!s:<26} {field.description}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="invasive-api",
        description="Serve the invasive-species classifier over HTTP (FastAPI + uvicorn). "
        "Configured by environment variables only.",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        errors = "; ".join(
            f"INVASIVE_{'_'.join(str(p) for p in e['loc']).upper()}: "
            * bool(e["loc"])  # none: settings that do not fit together
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        return _fail(f"invalid settings: {errors}")
    from app.processes import is_child, reuse_port_socket, supervise

    child = is_child()
    if settings.processes > 1 and settings.port == 0 and not child:
        return _fail("INVASIVE_PROCESSES > 1 needs a fixed INVASIVE_PORT (the processes share it)")
    # A server process's siblings hold the port already: the parent checked it was free.
    problem = (None if child else _port_in_use(settings.host, settings.port)) or preflight(
        settings
    )
    if problem:
        return _fail(problem)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.processes > 1 and not child:
        return supervise(settings)

    import uvicorn

    from app.head_timeout import with_head_timeout
    from app.main import create_app
    from app.server import (
        DrainingServer,
        raise_open_file_limit,
        return_decoders_freed_memory_to_the_os,
    )

    return_decoders_freed_memory_to_the_os()
    before, after = raise_open_file_limit()
    if after > before:
        logging.getLogger("app").info("open-file limit raised from %d to %d", before, after)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        workers=1,  # INVASIVE_PROCESSES > 1 runs several of these (app.processes)
        log_level=settings.log_level,
        # requests in flight: their uploads end when the port closes (app.uploads), the rest
        # within the request timeout
        timeout_graceful_shutdown=max(30, math.ceil(settings.request_timeout_s)),
        # h11 bounds the request line + headers (httptools has no such limit): 400 above it;
        # app.head_timeout adds a deadline for them.
        http=with_head_timeout(settings.header_timeout_s),
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )
    server = DrainingServer(config, drain_seconds=settings.drain_seconds)
    server.run(sockets=[reuse_port_socket(settings.host, settings.port)] if child else None)
    runtime = app.state.runtime
    return runtime.exit_code


def _port_in_use(host: str, port: int) -> str | None:
    """Fail before loading the model when the port is taken (another service may be there)."""
    if port == 0:
        return None
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


if __name__ == "__main__":
    sys.exit(main())
