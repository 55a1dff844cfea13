"""``python -m benchmarks.serving.c1_trace``: where a lone request's time goes, stage by stage.

Runs the real service (``app.main.create_app`` under uvicorn, as ``invasive-api`` configures it)
in this process, with timers wrapped around its stages, and a client in another process that
POSTs one 800x600 JPEG at a time (concurrency 1, keep-alive) to ``/v1/predict``. Then it runs
the in-process ceiling for the same engine (decode + preprocess + batch-1 forward) and prints,
per stage, the median milliseconds of a request:

    client wall | asgi (first byte of the app to last byte sent) | read_uploads | inspect |
    decode (hand-off to the decode process and back) | to_batch (pixels -> tensor) |
    queue (submit -> the inference thread has the batch) | forward | back (result on the loop) |
    respond (after the pipeline: JSON, middleware, send)

Monkeypatching only: nothing in app/ knows about it. Timings are per-stage medians and only
compare within one run (A-B), never across machines or busy periods.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

CLIENT = r"""
import http.client, json, sys, time
port, n, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
bodies = [open(p, 'rb').read() for p in sys.argv[4:]]
ctype = 'multipart/form-data; boundary=invasive-bench-5f1d3c9a8e7b'
conn = http.client.HTTPConnection('127.0.0.1', port)
walls = []
for i in range(n):
    body = bodies[i % len(bodies)]
    t0 = time.perf_counter()
    conn.request('POST', path, body=body, headers={'Content-Type': ctype})
    resp = conn.getresponse(); data = resp.read()
    walls.append((time.perf_counter() - t0) * 1000.0)
    assert resp.status == 200, (resp.status, data[:300])
    time.sleep(0.002)
print(json.dumps(walls))
"""


class Trace:
    """Durations per stage, for the requests measured (after warm-up)."""

    def __init__(self) -> None:
        self.spans: dict[str, list[float]] = defaultdict(list)
        self.marks: dict[str, float] = {}
        self.on = False
        self.variant = ""  # A-B: the variant the current request runs under
        self.count = 0
        self.batches = 0
        self.alone = 0

    def add(self, stage: str, ms: float) -> None:
        if self.on:
            self.spans[f"{self.variant}{stage}"].append(ms)

    def summary(self) -> dict[str, float]:
        return {k: statistics.median(v) for k, v in self.spans.items() if v}


TRACE = Trace()
WRK_SCRIPT = Path(__file__).with_name("wrk_multipart.lua")
AB: dict = {}  # what the A-B mode switches per request


def _timed_async(stage: str, fn):
    async def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            TRACE.add(stage, (time.perf_counter() - t0) * 1000.0)

    return wrapper


def _timed(stage: str, fn):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TRACE.add(stage, (time.perf_counter() - t0) * 1000.0)

    return wrapper


def instrument() -> None:
    """Wrap the service's stages with timers (whatever of them this revision has)."""
    import app.api.predict as predict_route
    import app.batcher as batcher
    import app.decoding as decoding
    import app.pipeline as pipeline
    from model.inference import Classifier

    predict_route.read_uploads = _timed_async("read_uploads", predict_route.read_uploads)
    pipeline.inspect_image = _timed("inspect", pipeline.inspect_image)
    decoding.DecodeLanes.decode = _timed_async("decode", decoding.DecodeLanes.decode)
    for name in ("pixels_to_tensor", "stack_pixels"):
        if hasattr(pipeline, name):
            setattr(pipeline, name, _timed("to_batch", getattr(pipeline, name)))
    Classifier.predict_probabilities = _timed("forward", Classifier.predict_probabilities)
    cls = pipeline.PredictionPipeline
    cls.predict = _timed_async("pipeline_predict", cls.predict)  # decode + batch + infer
    cls._decode = _timed_async("decode_stage", cls._decode)  # inspect + admit + decode
    original_score = pipeline.PredictionPipeline._score

    def score(self, payloads):
        TRACE.batches += 1
        TRACE.marks["process_started"] = time.perf_counter()
        TRACE.add("queue", (time.perf_counter() - TRACE.marks.get("submitted", 0)) * 1000.0)
        out = original_score(self, payloads)
        TRACE.marks["process_done"] = time.perf_counter()
        return out

    pipeline.PredictionPipeline._score = score
    original_submit = batcher.MicroBatcher.submit

    async def submit(self, payloads, announced=0):
        if AB.get("alone") is not None:  # A-B: lone batches on all threads, or on their share
            self._run_alone = AB["alone"] if TRACE.variant == "alone:" else None
        TRACE.marks["submitted"] = time.perf_counter()
        out = await original_submit(self, payloads, announced)
        TRACE.add("back", (time.perf_counter() - TRACE.marks["process_done"]) * 1000.0)
        TRACE.marks["resolved"] = time.perf_counter()
        return out

    batcher.MicroBatcher.submit = submit


class AsgiTimer:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") != "/v1/predict":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        if AB:
            TRACE.count += 1
            TRACE.variant = "alone:" if TRACE.count % 2 else "split:"

        async def timed_send(message):
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                end = time.perf_counter()
                TRACE.add("asgi", (end - t0) * 1000.0)
                if "resolved" in TRACE.marks:
                    TRACE.add("respond", (end - TRACE.marks.pop("resolved")) * 1000.0)

        await self.app(scope, receive, timed_send)


def _serve_and_load(
    env: dict[str, str], bodies: list[Path], requests: int, warmup: int, ab: str | None,
    concurrency: int = 1,
) -> dict:
    os.environ.update(env)
    import uvicorn

    from app.config import Settings
    from app.main import create_app
    from app.server import return_decoders_freed_memory_to_the_os

    return_decoders_freed_memory_to_the_os()
    instrument()
    settings = Settings()
    app = create_app(settings)
    original_start = app.state.runtime.start

    async def start():
        await original_start()
        batcher = app.state.runtime.batcher
        run_alone = batcher._run_alone
        if run_alone is not None:

            def counted():
                TRACE.alone += 1
                return run_alone()

            batcher._run_alone = counted
        if ab == "alone":
            AB["alone"] = batcher._run_alone

    app.state.runtime.start = start
    config = uvicorn.Config(
        AsgiTimer(app), host="127.0.0.1", port=settings.port, workers=1, log_level="warning",
        http="h11", h11_max_incomplete_event_size=settings.max_header_bytes, lifespan="on",
    )
    server = uvicorn.Server(config)
    result: dict = {}

    def client() -> None:
        while not server.started:
            time.sleep(0.05)
        while not (app.state.runtime.ready):
            time.sleep(0.05)
        argv = [sys.executable, "-c", CLIENT, str(settings.port)]
        subprocess.run([*argv, str(warmup), "/v1/predict", *map(str, bodies)], check=True,
                       capture_output=True)
        TRACE.on = True
        TRACE.batches = TRACE.alone = 0
        if concurrency > 1:  # wrk: throughput and how many batches ran alone under load
            out = subprocess.run(
                ["wrk", "-t1", f"-c{concurrency}", "-d10s", "-s", str(WRK_SCRIPT),
                 f"http://127.0.0.1:{settings.port}/v1/predict", "--", str(bodies[0].parent),
                 str(len(bodies)), "multipart/form-data; boundary=invasive-bench-5f1d3c9a8e7b"],
                check=True, capture_output=True, text=True)
            result["wrk"] = out.stdout
        else:
            out = subprocess.run([*argv, str(requests), "/v1/predict", *map(str, bodies)],
                                 check=True, capture_output=True, text=True)
            result["client_ms"] = json.loads(out.stdout)
        TRACE.on = False
        server.should_exit = True

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    asyncio.run(server.serve())
    thread.join()
    counts = {"batches": TRACE.batches, "alone_batches": TRACE.alone}
    if "wrk" in result:
        return {**counts, "wrk": result["wrk"].splitlines()[-12:],
                "stages_median_ms": TRACE.summary()}
    walls = result["client_ms"]
    if AB:
        walls_ab = {"alone": walls[0::2], "split": walls[1::2]}
        return {
            "client_p50_ms": {k: statistics.median(v) for k, v in walls_ab.items()},
            "stages_median_ms": TRACE.summary(),
        }
    return {
        **counts,
        "client_p50_ms": statistics.median(walls),
        "client_p90_ms": sorted(walls)[int(0.9 * len(walls))],
        "stages_median_ms": TRACE.summary(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=V")
    parser.add_argument("--concurrency", type=int, default=1, help=">1: wrk for 10 s")
    parser.add_argument(
        "--ab", choices=["alone"],
        help="alternate requests: a lone batch on every inference thread, or on its worker's",
    )
    args = parser.parse_args(argv)

    from benchmarks.serving.fixtures import DEFAULT_PHOTO_DIR, build_checkpoint, find_photos
    from benchmarks.serving.multipart import multipart_body

    work = Path(tempfile.mkdtemp(prefix="c1-trace-"))
    photos = find_photos(args.photos or DEFAULT_PHOTO_DIR, 8)
    bodies = []
    for i, photo in enumerate(photos):
        path = work / f"body_{i:03d}.bin"
        path.write_bytes(multipart_body("file", photo.name, photo.read_bytes()))
        bodies.append(path)
    checkpoint = args.checkpoint or build_checkpoint(work / "bench.safetensors")
    env = {
        "INVASIVE_CHECKPOINT": str(checkpoint),
        "INVASIVE_PORT": os.environ.get("C1_PORT", "8765"),
        "INVASIVE_LOG_LEVEL": "warning",
        "INVASIVE_ENGINE_CACHE_DIR": str(work / "engines"),
        **dict(pair.split("=", 1) for pair in args.env),
    }
    report = _serve_and_load(
        env, bodies, args.requests, args.warmup, args.ab, args.concurrency
    )
    report["env"] = {k: v for k, v in env.items() if k not in ("INVASIVE_CHECKPOINT",)}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
