"""Networks by name with the right head (construct only: cheap)."""

from __future__ import annotations

import pytest
import torch.nn as nn

from model.architectures import build_model, classifier_head_name, replace_classifier


@pytest.mark.parametrize(
    ("arch", "head"),
    [("resnet18", "fc"), ("resnet34", "fc"), ("resnet50", "fc"), ("mobilenet_v2", "classifier.1")],
)
def test_build_model_has_a_head_of_the_right_size(arch, head):
    model = build_model(arch, num_classes=3)
    assert classifier_head_name(model) == head
    assert model.get_submodule(head).out_features == 3


def test_replace_classifier_swaps_only_the_head():
    model = build_model("resnet18", 2)
    conv = model.conv1.weight.clone()
    replace_classifier(model, 5)
    assert model.fc.out_features == 5 and model.fc.in_features == 512
    assert (model.conv1.weight == conv).all()


def test_unknown_arch_and_too_few_classes():
    with pytest.raises(ValueError, match="unknown architecture 'resnet9000'"):
        build_model("resnet9000", 2)
    with pytest.raises(ValueError, match="at least 2"):
        build_model("resnet18", 1)
    with pytest.raises(ValueError, match="no nn.Linear"):
        classifier_head_name(nn.Sequential(nn.Conv2d(3, 3, 1)))
