"""Stop a request's work when its client goes away.

Starlette runs an endpoint to the end whether or not anyone is still waiting for its answer.
For this service that means a client that gave up (its own timeout, a closed app) still holds
its images in the decode lanes, the inference queue and the memory budget; under overload,
clients that give up and retry multiply the load. So once the body is read, the work runs
beside a watch on the connection: when the server reports ``http.disconnect`` first, the work
is cancelled (its decodes killed, its queued images dropped, its memory given back) and the
request is counted as 499 ``client_disconnected`` (nginx's code for a client that closed the
request) in the metrics; nobody reads the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Receive

from app.errors import ApiError

T = TypeVar("T")

CLIENT_CLOSED_REQUEST = 499


async def _disconnected(receive: Receive) -> None:
    """Returns once the server reports that the client went away (the body is already read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_client_leaves(receive: Receive, work: Awaitable[T]) -> T:
    """``await work``, cancelled when the client disconnects first (499 then)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this request itself cancelled (shutdown): take the work with it
        task.cancel()
        raise
    finally:
        watch.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    raise ApiError(
        CLIENT_CLOSED_REQUEST, "client_disconnected", "the client went away before the answer"
    )
