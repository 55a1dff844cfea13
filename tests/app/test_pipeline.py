"""The pipeline on its own, in both decode placements: in the batch (CPU) and per request (CUDA)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.errors import ApiError
from app.metrics import ServiceMetrics
from app.pipeline import ImageResult, PredictionPipeline
from tests.app.conftest import expected_probabilities
from tests.app.images import jpeg_bytes


def run_pipeline(classifier, decode_in_batch: bool, scenario, max_batch_size: int = 8):
    async def main():
        with ThreadPoolExecutor(2) as pool:
            pipeline = PredictionPipeline(
                classifier,
                pool,
                ServiceMetrics(),
                max_pixels=10_000_000,
                max_batch_size=max_batch_size,
                max_wait_s=0.05,
                queue_limit=64,
                decode_in_batch=decode_in_batch,
            )
            await pipeline.batcher.start()
            try:
                return await scenario(pipeline)
            finally:
                pipeline.batcher.stop()

    return asyncio.run(main())


@pytest.mark.parametrize("decode_in_batch", [True, False])
def test_good_and_bad_images_keep_their_places(reference_classifier, decode_in_batch):
    images = [jpeg_bytes(seed=1), b"", b"not an image", jpeg_bytes(seed=2)]

    async def scenario(pipeline):
        return await pipeline.predict(images)

    results = run_pipeline(reference_classifier, decode_in_batch, scenario)
    assert [type(r) for r in results] == [ImageResult, ApiError, ApiError, ImageResult]
    assert [r.code for r in results[1:3]] == ["empty_file", "unsupported_media_type"]
    for result, data in ((results[0], images[0]), (results[3], images[3])):
        assert result.batch_size == 2, "the two good images share one forward pass"
        assert list(result.prediction.probabilities.values()) == pytest.approx(
            expected_probabilities(reference_classifier, data), abs=1e-4
        )


@pytest.mark.parametrize("decode_in_batch", [True, False])
def test_concurrent_requests_are_batched_and_get_their_own_rows(
    reference_classifier, decode_in_batch
):
    images = [jpeg_bytes(seed=40 + i) for i in range(12)]

    async def scenario(pipeline):
        return await asyncio.gather(*(pipeline.predict([data]) for data in images))

    results = [r[0] for r in run_pipeline(reference_classifier, decode_in_batch, scenario)]
    assert max(r.batch_size for r in results) > 1
    for result, data in zip(results, images, strict=True):
        assert list(result.prediction.probabilities.values()) == pytest.approx(
            expected_probabilities(reference_classifier, data), abs=1e-4
        )


def test_placement_follows_the_device(reference_classifier):
    with ThreadPoolExecutor(1) as pool:
        pipeline = PredictionPipeline(
            reference_classifier,
            pool,
            ServiceMetrics(),
            max_pixels=1000,
            max_batch_size=2,
            max_wait_s=0.0,
            queue_limit=4,
        )
    assert reference_classifier.device.type == "cpu" and pipeline.decode_in_batch
