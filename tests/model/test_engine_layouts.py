"""The service's batch layout and a lone batch's threads, through every engine.

The service stacks decoded (S, S, 3) arrays into one batch and hands the engine a channels_last
view of it (``stack_pixels``); offline scoring stacks (3, S, S) tensors. Both must give the same
probabilities, on every engine, and so must a batch run on all threads
(``using_all_threads``, a lone batch with the other inference workers idle).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from model.engines.base import all_threads, using_all_threads
from model.inference import Classifier
from model.preprocessing import (
    PreprocessSpec,
    normalize_batch,
    pixels_to_tensor,
    prepare_pixels,
    stack_pixels,
)
from tests.app.images import jpeg_bytes

ENGINES = ["eager"] + [n for n in ("openvino",) if importlib.util.find_spec(n)]


@pytest.fixture(scope="module")
def pixels(demo_checkpoint) -> list[np.ndarray]:
    spec = Classifier.from_checkpoint(demo_checkpoint, "cpu", "fp32").spec
    sizes = [(640, 480), (128, 128), (300, 200)]
    return [prepare_pixels(jpeg_bytes(size, seed=60 + i), spec) for i, size in enumerate(sizes)]


def test_stack_pixels_is_the_offline_batch_in_channels_last_memory(pixels):
    batch = stack_pixels(pixels)
    offline = torch.stack([pixels_to_tensor(p) for p in pixels])
    assert batch.shape == offline.shape and batch.dtype == torch.uint8
    assert torch.equal(batch, offline)
    assert batch.is_contiguous(memory_format=torch.channels_last)
    # one copy: the batch is a view of the stacked (N, S, S, 3) array, no transpose copy
    assert batch.permute(0, 2, 3, 1).is_contiguous()


def test_normalize_batch_keeps_its_constants_and_layout(pixels):
    spec = PreprocessSpec(input_size=pixels[0].shape[0])
    batch = stack_pixels(pixels)
    first = normalize_batch(batch, spec)
    again = normalize_batch(batch.contiguous(), spec)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    torch.testing.assert_close(first, (batch.float() / 255.0 - mean) / std)
    assert first.is_contiguous(memory_format=torch.channels_last)


def test_using_all_threads_widens_this_thread_and_puts_it_back():
    torch.set_num_threads(1)
    assert all_threads() == 0
    with using_all_threads(2):
        assert all_threads() == 2
        assert torch.get_num_threads() == 2
    assert all_threads() == 0
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_service_layout_and_lone_batches_score_like_offline(demo_checkpoint, pixels, tmp_path,
                                                           engine):
    reference = Classifier.from_checkpoint(demo_checkpoint, "cpu", "fp32")
    offline = reference.predict_probabilities(torch.stack([pixels_to_tensor(p) for p in pixels]))
    clf = Classifier.from_checkpoint(
        demo_checkpoint, "cpu", "fp32", engine=engine, cache_dir=tmp_path, threads=2, streams=2
    )
    assert clf.engine_info.name == engine
    shared = clf.predict_probabilities(stack_pixels(pixels))
    with using_all_threads(2):
        alone = clf.predict_probabilities(stack_pixels(pixels))
        alone_one = clf.predict_probabilities(stack_pixels(pixels[:1]))
    np.testing.assert_allclose(shared, offline, atol=1e-4, rtol=0)
    np.testing.assert_allclose(alone, offline, atol=1e-4, rtol=0)
    np.testing.assert_allclose(alone_one, offline[:1], atol=1e-4, rtol=0)


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="needs openvino")
def test_openvino_compiles_an_all_threads_model_only_for_several_workers(demo_checkpoint,
                                                                        tmp_path):
    several = Classifier.from_checkpoint(
        demo_checkpoint, "cpu", "fp32", engine="openvino", cache_dir=tmp_path, threads=2,
        streams=2,
    ).engine
    one = Classifier.from_checkpoint(
        demo_checkpoint, "cpu", "fp32", engine="openvino", cache_dir=tmp_path, threads=2,
        streams=1,
    ).engine
    assert several.wide is not None and one.wide is None
    assert str(several.compiled.get_property("PERFORMANCE_HINT")).endswith("THROUGHPUT")
    assert str(several.wide.get_property("PERFORMANCE_HINT")).endswith("LATENCY")
    assert int(several.wide.get_property("INFERENCE_NUM_THREADS")) == 2
