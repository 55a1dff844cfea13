"""Two batch uploads that each fit the memory budget alone, not together, sent so that their
uploads overlap (each body's last 100 bytes are held back until both are almost in).

Each body: three 1500x1500 noise PNGs (6.4 MiB each, 19.3 MiB in all); decoding one in the heavy
lane is charged 64.6 MiB. Under INVASIVE_MEMORY_BUDGET_MB=100 one request needs 19.3 + 64.6 MiB,
two need 2 x 19.3 + 64.6: the requests wait for each other.

    bash benchmarks/results/admission-cycle/run.sh   # starts the service on port 8765
"""

from __future__ import annotations

import asyncio
import io
import time

import httpx
import numpy as np
from PIL import Image

URL = "http://127.0.0.1:8765/v1/predict/batch"
BOUNDARY = b"XyZbOuNdArY"


def body(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (1500, 1500, 3), dtype=np.uint8)
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG")
    part = (
        b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="files"; filename="n.png"'
        b"\r\nContent-Type: image/png\r\n\r\n" + png.getvalue() + b"\r\n"
    )
    return part * 3 + b"--" + BOUNDARY + b"--\r\n"


async def one(client: httpx.AsyncClient, i: int, payload: bytes, gate, started: float) -> str:
    async def stream():
        yield payload[:-100]
        await gate.wait()
        yield payload[-100:]

    response = await client.post(
        URL,
        content=stream(),
        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY.decode()}"},
    )
    answer = response.json()
    if response.status_code == 200:
        detail = [item["status"] for item in answer["results"]]
    else:
        detail = answer["error"]["message"]
    return f"request {i}: {response.status_code} after {time.monotonic() - started:.2f} s {detail}"


async def main() -> None:
    payloads = [body(seed) for seed in (0, 1)]
    async with httpx.AsyncClient(timeout=60) as client:
        for round_ in range(3):
            gate, started = asyncio.Event(), time.monotonic()
            tasks = [
                asyncio.create_task(one(client, i, payloads[i], gate, started)) for i in (0, 1)
            ]
            await asyncio.sleep(0.5)
            gate.set()
            for line in await asyncio.gather(*tasks):
                print(f"round {round_}: {line}")


if __name__ == "__main__":
    asyncio.run(main())
