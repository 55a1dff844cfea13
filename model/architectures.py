"""Build any torchvision classification network by name, with a head of the right size."""

from __future__ import annotations

import torch.nn as nn
import torchvision.models as tvm

DEFAULT_ARCH = "resnet18"


def available_architectures() -> list[str]:
    """Names torchvision registers as classification models (resnet18, mobilenet_v2, ...)."""
    return sorted(tvm.list_models(module=tvm))


def build_model(arch: str, num_classes: int) -> nn.Module:
    """A randomly initialised ``arch`` whose classifier outputs ``num_classes`` logits."""
    if arch not in available_architectures():
        raise ValueError(
            f"unknown architecture {arch!r}; any torchvision classification model works, "
            f"e.g. resnet18, resnet34, resnet50, mobilenet_v2"
        )
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    return tvm.get_model(arch, weights=None, num_classes=num_classes)


def classifier_head_name(model: nn.Module) -> str:
    """Dotted name of the last ``nn.Linear``: the head that fine-tuning replaces."""
    linear_names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linear_names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier head")
    return linear_names[-1]


def replace_classifier(model: nn.Module, num_classes: int) -> nn.Module:
    """Swap the final linear layer for a fresh one with ``num_classes`` outputs (in place)."""
    head_name = classifier_head_name(model)
    parent_name, _, attr = head_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, attr)
    setattr(parent, attr, nn.Linear(old.in_features, num_classes, bias=old.bias is not None))
    return model
