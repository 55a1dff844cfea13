"""Preprocessing and the Classifier that training, predict and the service share."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from model.inference import Classifier, resolve_device, resolve_precision
from model.preprocessing import PreprocessSpec, normalize_batch, prepare_input


def test_prepare_input_is_a_uint8_square_tensor():
    buf = io.BytesIO()
    Image.new("RGB", (90, 40), (255, 0, 0)).save(buf, format="PNG")
    tensor = prepare_input(buf.getvalue(), PreprocessSpec(input_size=32))
    assert tensor.shape == (3, 32, 32) and tensor.dtype == torch.uint8
    assert tensor[0].float().mean() > 250 and tensor[1].float().mean() < 5


def test_normalize_batch_uses_the_spec():
    spec = PreprocessSpec(input_size=2, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    batch = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    assert torch.allclose(normalize_batch(batch, spec), torch.ones(1, 3, 2, 2))


def test_device_and_precision_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cpu")) in ("bf16", "fp32")
    with pytest.raises(ValueError, match="fp16 is not supported on CPU"):
        resolve_precision("fp16", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_classifier_scores_and_interprets_at_the_threshold(demo_checkpoint):
    clf = Classifier.from_checkpoint(demo_checkpoint, device="cpu", precision="fp32")
    probs = clf.predict_probabilities(torch.zeros((2, 3, 64, 64), dtype=torch.uint8))
    assert probs.shape == (2, 2) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    threshold = clf.metadata.threshold
    above = clf.interpret(np.array([1 - threshold - 1e-3, threshold + 1e-3]))
    below = clf.interpret(np.array([1 - threshold + 1e-3, threshold - 1e-3]))
    assert above.invasive and above.label == "invasive"
    assert not below.invasive and below.label == "not_invasive"
    with pytest.raises(ValueError, match="expected a"):
        clf.predict_probabilities(torch.zeros((3, 64, 64), dtype=torch.uint8))
