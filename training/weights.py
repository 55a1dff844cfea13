"""Initial weights for ``fit``: ``--weights imagenet | none | PATH``.

``imagenet`` takes torchvision's pretrained weights (downloaded once into the torch hub cache);
``none`` starts from random initialisation; ``PATH`` is a local state dict (safetensors, or a
``torch.save`` file read with ``weights_only=True`` so it cannot run code) whose keys must all
match the architecture except the classifier head, which is always replaced by a fresh one sized
for this dataset's classes.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torchvision.models as tvm

from model.architectures import build_model, classifier_head_name, replace_classifier
from training.errors import TrainingError, list_offenders


def build_initial_model(arch: str, num_classes: int, weights: str) -> nn.Module:
    """``arch`` with ``num_classes`` outputs, initialised as ``weights`` says."""
    try:
        model = build_model(arch, num_classes=1000 if weights == "imagenet" else num_classes)
        classifier_head_name(model)  # the head fit replaces and describes: none, no training
    except ValueError as exc:  # an unknown name, or a model without a linear classifier head
        raise TrainingError(f"--arch {arch}: {exc}") from None
    if weights == "none":
        return model
    if weights == "imagenet":
        model.load_state_dict(_imagenet_state_dict(arch))
        return replace_classifier(model, num_classes)
    load_backbone(model, Path(weights))
    return model


def check_initial_weights(arch: str, weights: str, image_size: int) -> None:
    """Build ``arch`` with ``weights`` once, run one training-mode step's forward pass at
    ``image_size`` and drop it, so that an unknown architecture, a failed download, a weights
    file that does not fit, or a model that cannot train here (an input size it refuses,
    auxiliary outputs) is refused before the photos are decoded (minutes on a large set), not
    after. For ``imagenet`` this downloads the weights into the torch hub cache, where the real
    build then finds them."""
    model = build_initial_model(arch, 2, weights).train()
    try:
        with torch.no_grad():  # 2 images: BatchNorm refuses a batch of one in training mode
            out = model(torch.zeros(2, 3, image_size, image_size))
    except (AssertionError, RuntimeError, ValueError) as exc:  # vit_b_16: "Wrong image height!"
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise TrainingError(f"--arch {arch} does not take --image-size {image_size} input "
                            f"({reason}); try another --image-size or --arch") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, 2):
        raise TrainingError(f"--arch {arch}: in training it returns {type(out).__name__}, not "
                            "one tensor of class scores (e.g. auxiliary outputs), which fit "
                            "cannot train; pick another --arch")


def describe_weights(arch: str, weights: str, model: nn.Module) -> str:
    """Where ``build_initial_model`` took ``model``'s weights from, and what its head is."""
    head = classifier_head_name(model)
    outputs = model.get_submodule(head).out_features
    if weights == "none":
        return f"none: random initialisation; classifier head {head!r}: {outputs} outputs"
    if weights == "imagenet":
        name = str(tvm.get_model_weights(arch).DEFAULT)
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        source = f"ImageNet, torchvision {name} (cached in {cache})"
    else:
        source = f"{weights} (every tensor but the classifier head)"
    return f"{source}; classifier head {head!r} replaced: {outputs} outputs"


def _imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    try:
        pretrained = tvm.get_model_weights(arch).DEFAULT
    except (ValueError, AttributeError):
        raise TrainingError(f"torchvision has no ImageNet weights for {arch!r}") from None
    try:
        return pretrained.get_state_dict(progress=True)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError
        raise TrainingError(
            f"could not download the ImageNet weights for {arch} ({exc}). Offline, train from "
            f"scratch with --weights none, or pass a local state dict: --weights PATH "
            f"(e.g. --weights weights/{arch}_imagenet.pth; safetensors or torch.save files)"
        ) from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A flat name -> tensor dict from a safetensors file or a weights-only torch file."""
    if not path.is_file():
        raise TrainingError(
            f"--weights {path}: no such file (use imagenet, none, or a path to a state dict)"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "not a usable weights file"
        # torch's own message runs to a dozen lines of advice (load with weights_only=False,
        # file a PyTorch issue) that this CLI cannot take and the user should not: one line.
        if path.suffix == ".safetensors":
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        else:
            reason = ("torch.save files are read with weights_only=True, so one holding "
                      "anything but tensors and plain containers is refused too")
        raise TrainingError(f"--weights {path}: not a safetensors file or a torch.save state "
                            f"dict ({reason})") from None
    for wrapper in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TrainingError(f"--weights {path}: expected a dict of tensors (a state dict)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_backbone(model: nn.Module, path: Path) -> None:
    """Load every non-head tensor of ``path`` into ``model``; the head keeps its fresh init."""
    state = read_state_dict(path)
    head = classifier_head_name(model) + "."
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(head)}
    theirs = {k: v for k, v in state.items() if not k.startswith(head)}
    missing = sorted(set(own) - set(theirs))
    unexpected = sorted(set(theirs) - set(own))
    mismatched = [
        f"{k} {tuple(theirs[k].shape)} vs {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(theirs))
        if theirs[k].shape != own[k].shape
    ]
    problems = [
        list_offenders(title, items)
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                             ("shape mismatches", mismatched))
        if items
    ]
    if problems:
        raise TrainingError(
            f"--weights {path} does not fit this architecture (only the classifier head "
            f"{head[:-1]!r} may differ):\n  " + "\n  ".join(problems)
        )
    model.load_state_dict(theirs, strict=False)
