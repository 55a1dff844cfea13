"""The pipeline on its own: inspect -> admit -> decode (real decode processes) -> batch -> infer."""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from app.admission import MemoryBudget
from app.decoding import DecodeLanes
from app.errors import ApiError
from app.metrics import ServiceMetrics
from app.pipeline import ImageResult, PredictionPipeline
from tests.app.conftest import expected_probabilities
from tests.app.images import jpeg_bytes

MB = 1024 * 1024


def big_png(side: int = 5000) -> bytes:
    """A valid, smooth PNG that is small on disk and slow to decode (tens of MP)."""
    ramp = np.linspace(0, 255, side, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.tile(ramp, (side, 1)), "L").save(buffer, format="PNG")
    return buffer.getvalue()


def run_pipeline(
    classifier,
    scenario,
    *,
    max_batch_size: int = 8,
    budget_mb: int = 256,
    decode_timeout_s: float = 10.0,
    request_timeout_s: float = 30.0,
    admission_wait_s: float = 0.2,
    reserve_mb: int = 0,
    process=None,
):
    async def main():
        lanes = DecodeLanes(
            classifier.spec,
            max_pixels=50_000_000,
            light_processes=2,
            heavy_processes=1,
            timeout_s=decode_timeout_s,
        )
        await lanes.start()
        with ThreadPoolExecutor(2) as inspect_pool:
            pipeline = PredictionPipeline(
                classifier,
                lanes,
                inspect_pool,
                ServiceMetrics(),
                max_pixels=50_000_000,
                max_batch_size=max_batch_size,
                max_wait_s=0.05,
                queue_limit=64,
                request_timeout_s=request_timeout_s,
            )
            if process is not None:
                pipeline.batcher._process = process
            budget = MemoryBudget(
                budget_mb * MB, wait_s=admission_wait_s, reserve_bytes=reserve_mb * MB
            )
            await pipeline.batcher.start()
            try:
                return await scenario(pipeline, budget)
            finally:
                pipeline.batcher.stop()
                lanes.stop()

    return asyncio.run(main())


async def predict(pipeline, budget, images):
    async with budget.charge() as charge:
        return await pipeline.predict(images, charge)


def test_good_and_bad_images_keep_their_places(reference_classifier):
    images = [jpeg_bytes(seed=1), b"", b"not an image", jpeg_bytes(seed=2)]

    async def scenario(pipeline, budget):
        results = await predict(pipeline, budget, images)
        assert budget.in_use == 0, "everything charged is given back"
        return results

    results = run_pipeline(reference_classifier, scenario)
    assert [type(r) for r in results] == [ImageResult, ApiError, ApiError, ImageResult]
    assert [r.code for r in results[1:3]] == ["empty_file", "unsupported_media_type"]
    for result, data in ((results[0], images[0]), (results[3], images[3])):
        assert result.batch_size == 2, "the two good images share one forward pass"
        assert list(result.prediction.probabilities.values()) == pytest.approx(
            expected_probabilities(reference_classifier, data), abs=1e-4
        )


def test_a_batch_that_fits_the_budget_only_in_parts_is_scored_in_waves(reference_classifier):
    """Five 12 MP photos need more memory decoded together than a 16 MiB budget holds, while
    each fits alone, so each is scored (before, the last ones got a permanent 413 from their
    siblings)."""
    from tests.app.images import encode, field_photo

    phone = encode(field_photo((4032, 3024), seed=3), "JPEG", quality=85)
    never = big_png(4000)  # 16 MP of 8-bit grey and a decode process: over the whole budget

    async def scenario(pipeline, budget):
        results = await predict(pipeline, budget, [phone] * 5 + [never])
        assert budget.in_use == 0, "everything charged is given back"
        return results

    results = run_pipeline(reference_classifier, scenario, budget_mb=16)
    assert [type(r) for r in results] == [ImageResult] * 5 + [ApiError]
    assert (results[5].status, results[5].code) == (413, "image_too_large")
    assert max(r.batch_size for r in results[:5]) < 5, "in waves, not one batch"
    expected = expected_probabilities(reference_classifier, phone)
    for result in results[:5]:
        assert list(result.prediction.probabilities.values()) == pytest.approx(expected, abs=1e-4)


def test_a_batch_with_a_heavy_image_is_waved_to_leave_the_reserve(reference_classifier):
    """Two phone JPEGs (decoded in the batch, ~4 MiB each) and a BMP (heavy lane: its decode
    and a decode process, ~47 MiB) fit a 50 MiB budget with its 14 MiB reserve together, but
    heavy decodes may not use the reserve. In one wave the BMP did not fit beside its own
    siblings' memory (413, though it fits alone); in two waves all three are scored."""
    from tests.app.images import encode, field_photo

    phone = encode(field_photo((4032, 3024), seed=3), "JPEG", quality=85)
    bmp = encode(field_photo((1000, 1000), seed=1), "BMP")

    async def scenario(pipeline, budget):
        pipeline.decode_in_batch = True  # the default service's INVASIVE_JPEG_DECODE=batch
        results = await predict(pipeline, budget, [phone, phone, bmp])
        assert budget.in_use == 0 and budget.gave_way == 0
        return results

    results = run_pipeline(reference_classifier, scenario, budget_mb=50, reserve_mb=14)
    assert [type(r) for r in results] == [ImageResult] * 3, results


def test_a_batch_of_more_heavy_images_than_the_heavy_lane_holds_is_scored(reference_classifier):
    """The heavy lane holds 4 images per process; a request's own heavy images wait for each
    other instead of filling it and being refused 503 queue_full (for ever, on retry)."""
    from tests.app.images import encode, photo

    bmps = [encode(photo((96, 72), seed=60 + i), "BMP") for i in range(6)]

    async def scenario(pipeline, budget):
        assert pipeline.lanes.backlog_limits[True] < len(bmps)
        return await predict(pipeline, budget, bmps)

    results = run_pipeline(reference_classifier, scenario)
    assert [type(r) for r in results] == [ImageResult] * 6
    for result, data in zip(results, bmps, strict=True):
        assert list(result.prediction.probabilities.values()) == pytest.approx(
            expected_probabilities(reference_classifier, data), abs=1e-4
        )


def test_each_jpeg_decoded_in_the_batch_is_timed_with_its_share_only(reference_classifier):
    """The batch's JPEG decoding took 80 ms for 4 JPEGs: each reports 20, the image decoded
    before the batch 0 (each reported all 80 before)."""
    from app.pipeline import EncodedJpeg

    async def scenario(pipeline, budget):
        size = pipeline.classifier.spec.input_size
        pixels = np.zeros((size, size, 3), dtype=np.uint8)
        items = [EncodedJpeg(b"jpeg", 1)] * 4 + [pixels]
        batch = torch.zeros((5, 3, size, size), dtype=torch.uint8)
        pipeline._assemble = lambda _: (batch, list(range(5)), 80.0)
        return pipeline._score(items)

    scored = run_pipeline(reference_classifier, scenario)
    assert [s.device_decode_ms for s in scored] == [20.0] * 4 + [0.0]


def test_concurrent_requests_are_batched_and_get_their_own_rows(reference_classifier):
    images = [jpeg_bytes(seed=40 + i) for i in range(12)]

    async def scenario(pipeline, budget):
        return await asyncio.gather(*(predict(pipeline, budget, [data]) for data in images))

    results = [r[0] for r in run_pipeline(reference_classifier, scenario)]
    assert max(r.batch_size for r in results) > 1
    for result, data in zip(results, images, strict=True):
        assert list(result.prediction.probabilities.values()) == pytest.approx(
            expected_probabilities(reference_classifier, data), abs=1e-4
        )


def test_slow_decode_fails_alone_and_its_process_is_replaced(reference_classifier):
    slow = big_png(7000)  # 49 MP, under run_pipeline's 50 MP limit: several times the timeout

    async def scenario(pipeline, budget):
        slow_result, ordinary = await asyncio.gather(
            predict(pipeline, budget, [slow]), predict(pipeline, budget, [jpeg_bytes(seed=3)])
        )
        again = await predict(pipeline, budget, [slow, jpeg_bytes(seed=4)])
        return slow_result[0], ordinary[0], again, pipeline.lanes.timeouts

    # 0.1 s: the 49 MP PNG takes about half a second to decode on a quiet 2-vCPU box (more on a
    # busy one), a small photo a few milliseconds (a 25 MP PNG and 0.25 s: the PNG got through)
    slow_result, ordinary, again, timeouts = run_pipeline(
        reference_classifier, scenario, decode_timeout_s=0.1, budget_mb=512
    )
    assert isinstance(slow_result, ApiError) and slow_result.code == "decode_timeout"
    assert slow_result.status == 422
    assert isinstance(ordinary, ImageResult)
    assert [type(r) for r in again] == [ApiError, ImageResult], "the heavy lane came back"
    assert timeouts == 2


def test_a_decode_that_waits_for_a_busy_cpu_is_not_refused_as_too_costly():
    """422 decode_timeout tells the client its image is at fault, so the budget is CPU time.

    A niced heavy-lane decode beside busy inference threads gets a sliver of a core: on wall
    time a legitimate photo ran out of it and got 422 (4 times in one soak run). Here the
    decode process is stopped mid-decode (SIGSTOP: the CPU starved outright) for longer than
    its whole budget, then let go: it had used a fraction of its CPU time, so the image is
    decoded; the old wall-time budget killed it and answered 422.
    """
    import os
    import signal
    import time

    import psutil

    from model.preprocessing import PreprocessSpec

    slow = big_png(4000)  # 16 MP: a few hundred ms of CPU to decode, far under the budget

    async def main():
        lanes = DecodeLanes(PreprocessSpec(input_size=32), max_pixels=50_000_000,
                            light_processes=1, heavy_processes=1, timeout_s=3.0)
        await lanes.start()
        try:
            (pid,) = lanes._light._pool_manager.worker_manager.workers
            decoder = psutil.Process(pid)
            idle_cpu = sum(decoder.cpu_times()[:2])
            decoding = asyncio.ensure_future(lanes.decode(slow, heavy=False))
            deadline = time.monotonic() + 10
            while sum(decoder.cpu_times()[:2]) < idle_cpu + 0.03:  # it is decoding now
                assert time.monotonic() < deadline and not decoding.done()
                await asyncio.sleep(0.005)
            os.kill(pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(4.0)  # more wall time than the whole budget
                waited = not decoding.done()
            finally:
                os.kill(pid, signal.SIGCONT)
            pixels = await asyncio.wait_for(decoding, 30)
            return waited, pixels.shape, lanes.timeouts
        finally:
            lanes.stop()

    waited, shape, timeouts = asyncio.run(main())
    assert waited, "the stopped decoder answered anyway"
    assert shape == (32, 32, 3)
    assert timeouts == 0


def test_start_up_is_not_held_to_a_tight_decode_timeout():
    """Each decode process's first image also waits for the forkserver and its imports: that is
    not an image's cost, so INVASIVE_DECODE_TIMEOUT_S does not apply to the start-up decodes."""
    from model.preprocessing import PreprocessSpec

    async def main():
        lanes = DecodeLanes(PreprocessSpec(input_size=32), max_pixels=50_000_000,
                            light_processes=1, heavy_processes=1, timeout_s=0.001)
        try:
            await lanes.start()
            return lanes.timeouts
        finally:
            lanes.stop()

    assert asyncio.run(main()) == 0


def test_a_decode_lane_whose_idle_process_died_is_started_afresh():
    """A process that dies idle (the OOM killer, an operator) breaks a pebble pool for good:
    every later image failed (as a 422 blaming the upload) and the lane's backlog count leaked
    until it refused everything. Now the next image gets a new pool and is decoded."""
    import os
    import signal
    import time

    from model.preprocessing import PreprocessSpec
    from tests.app.images import encode, photo

    png = encode(photo(), "PNG")

    async def main():
        lanes = DecodeLanes(PreprocessSpec(input_size=32), max_pixels=50_000_000,
                            light_processes=2, heavy_processes=1, timeout_s=10)
        await lanes.start()
        try:
            pid = next(iter(lanes._light._pool_manager.worker_manager.workers))
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while lanes._light.active and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            decoded = [await lanes.decode(png, heavy=False) for _ in range(3)]
            return decoded, lanes.restarts, lanes.backlog
        finally:
            lanes.stop()

    decoded, restarts, backlog = asyncio.run(main())
    assert [d.shape for d in decoded] == [(32, 32, 3)] * 3
    assert restarts == 1
    assert backlog == {False: 0, True: 0}


def test_image_over_the_whole_budget_is_413_and_budget_busy_is_503(reference_classifier):
    huge = big_png(4000)  # 16 MP: more than a 16 MiB budget can ever hold

    async def scenario(pipeline, budget):
        (alone,) = await predict(pipeline, budget, [huge])
        async with budget.charge() as hog:
            await hog.add(budget.capacity - 64 * 1024)  # another request holds nearly all
            with pytest.raises(ApiError) as busy:
                await predict(pipeline, budget, [jpeg_bytes((800, 600), seed=5)])
        (after,) = await predict(pipeline, budget, [jpeg_bytes((800, 600), seed=5)])
        return alone, busy.value, after

    alone, busy, after = run_pipeline(reference_classifier, scenario, budget_mb=16)
    assert isinstance(alone, ApiError) and (alone.status, alone.code) == (413, "image_too_large")
    assert (busy.status, busy.code) == (503, "at_capacity")
    assert busy.headers == {"Retry-After": "1"}
    assert isinstance(after, ImageResult), "once the memory is back, work is admitted again"


def test_requests_waiting_for_each_other_the_later_gives_way_at_once(reference_classifier):
    """Two requests each hold an upload of 6 MiB of a 16 MiB budget and need 6 MiB more to
    decode: each fits alone, not beside the other. Waiting would end in 503 for both after the
    admission wait (and their retries meet again); now the later one gives way at once."""
    png = big_png(1000)  # 6 MiB decoded, in a decode process

    async def request(budget, pipeline, started):
        async with budget.charge() as charge:
            await charge.add(6 * MB)  # its upload
            try:
                (outcome,) = await pipeline.predict([png], charge)
            except ApiError as exc:
                outcome = exc
            return outcome, asyncio.get_running_loop().time() - started

    async def scenario(pipeline, budget):
        started = asyncio.get_running_loop().time()
        first = asyncio.create_task(request(budget, pipeline, started))
        later = asyncio.create_task(request(budget, pipeline, started))
        return await first, await later, budget.in_use, budget.gave_way

    (first, _), (later, later_s), in_use, gave_way = run_pipeline(
        reference_classifier, scenario, budget_mb=16, admission_wait_s=10.0
    )
    assert isinstance(first, ImageResult)
    assert (later.status, later.code) == (503, "at_capacity")
    assert "gave way" in later.message and later.headers == {"Retry-After": "1"}
    assert later_s < 5.0, "refused at once, not after the 10 s admission wait"
    assert (in_use, gave_way) == (0, 1)


def test_request_timeout_is_503_and_cancels_its_queued_work(reference_classifier):
    import threading

    release = threading.Event()
    real = None

    def stalled(tensors):
        release.wait(10)
        return real(tensors)

    async def scenario(pipeline, budget):
        nonlocal real
        real = pipeline._score
        with pytest.raises(ApiError) as timed_out:
            await predict(pipeline, budget, [jpeg_bytes(seed=6)])
        release.set()
        (later,) = await predict(pipeline, budget, [jpeg_bytes(seed=7)])
        return timed_out.value, later

    timed_out, later = run_pipeline(
        reference_classifier, scenario, request_timeout_s=0.5, process=stalled
    )
    assert (timed_out.status, timed_out.code) == (503, "request_timeout")
    assert isinstance(later, ImageResult)


def test_model_failure_is_500_inference_failed_and_the_next_request_works(reference_classifier):
    calls = []
    real = None

    def flaky(tensors):
        calls.append(len(tensors))
        if len(calls) == 1:
            raise RuntimeError("CUDA error: an illegal memory access")
        return real(tensors)

    async def scenario(pipeline, budget):
        nonlocal real
        real = pipeline._score
        with pytest.raises(ApiError) as failed:
            await predict(pipeline, budget, [jpeg_bytes(seed=8)])
        (later,) = await predict(pipeline, budget, [jpeg_bytes(seed=9)])
        return failed.value, later

    failed, later = run_pipeline(reference_classifier, scenario, process=flaky)
    assert (failed.status, failed.code) == (500, "inference_failed")
    assert isinstance(later, ImageResult)


def test_a_full_heavy_lane_sheds_new_heavy_work_with_503(reference_classifier):
    slow = big_png()  # heavy: ~25 MB decoded, about a second to decode

    async def scenario(pipeline, budget):
        limit = pipeline.lanes.backlog_limits[True]
        outcomes = await asyncio.gather(
            *(predict(pipeline, budget, [slow]) for _ in range(limit + 2)),
            return_exceptions=True,
        )
        (ordinary,) = await predict(pipeline, budget, [jpeg_bytes(seed=10)])
        return limit, outcomes, ordinary

    limit, outcomes, ordinary = run_pipeline(reference_classifier, scenario, budget_mb=1024)
    shed = [o for o in outcomes if isinstance(o, ApiError)]
    assert [(o.status, o.code) for o in shed] == [(503, "queue_full")] * 2
    assert "heavy decode lane" in shed[0].message
    assert sum(isinstance(o, list) and isinstance(o[0], ImageResult) for o in outcomes) == limit
    assert isinstance(ordinary, ImageResult)
