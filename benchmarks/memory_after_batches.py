"""Main-process RSS of the service after large batch requests (does freed memory go back?).

Starts ``python -m app`` on a checkpoint, sends ``--rounds`` batches of ``--files`` PNGs padded
to about 20 MiB each (an 800x600 photo plus random bytes, under INVASIVE_MAX_UPLOAD_BYTES), and
prints the server's RSS when idle and 2 s after each batch. Loopback only; bounded by rounds.

    python -m benchmarks.memory_after_batches --checkpoint models/model.safetensors --files 9
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--port", type=int, default=18760)
    parser.add_argument("--files", type=int, default=9, help="files per batch (20 MiB each)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVASIVE_")}
    env.update(INVASIVE_CHECKPOINT=str(args.checkpoint), INVASIVE_PORT=str(args.port),
               INVASIVE_LOG_LEVEL="warning", INVASIVE_DRAIN_SECONDS="0")
    server = subprocess.Popen([sys.executable, "-m", "app"], cwd=REPO, env=env)
    base = f"http://127.0.0.1:{args.port}"
    try:
        for _ in range(240):
            try:
                if httpx.get(f"{base}/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        pixels = np.random.default_rng(0).integers(0, 255, (600, 800, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG")
        photo = buffer.getvalue()
        padded = photo + os.urandom(20 * 2**20 - 64 * 1024 - len(photo))
        process = psutil.Process(server.pid)
        print(f"idle: main RSS {process.memory_info().rss / 2**20:.0f} MB")
        for round_ in range(args.rounds):
            files = [("files", (f"{i}.png", padded)) for i in range(args.files)]
            answer = httpx.post(f"{base}/v1/predict/batch", files=files, timeout=120)
            statuses = [item["status"] for item in answer.json().get("results", [])]
            time.sleep(2)
            print(f"batch {round_ + 1} ({args.files} x 20 MiB): {answer.status_code}, "
                  f"items {dict(sorted((s, statuses.count(s)) for s in set(statuses)))}, "
                  f"main RSS {process.memory_info().rss / 2**20:.0f} MB")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)


if __name__ == "__main__":
    main()
