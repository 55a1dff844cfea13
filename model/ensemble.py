"""Fold ensembles: k networks of one architecture served as one model.

``fit --folds k --ensemble`` writes the k fold models into one checkpoint. The service, ``predict``
and ``evaluate`` load it like any other (:func:`model.checkpoint.load_checkpoint` builds a
:class:`FoldEnsemble` when the metadata says so) and score it as the mean of the members'
probabilities. Every member sees the whole batch, so an ensemble is batched exactly like a single
model and costs k forward passes per image.

Why ``forward`` returns ``log(mean of the members' softmax)``: everything downstream (the engines,
their parity check, ``Classifier``) applies a softmax to logits. The softmax of the log of a
probability vector is that vector, so the ensemble needs no special case anywhere and a
converted engine (OpenVINO, ONNX Runtime) runs the whole ensemble, averaging included, as one
graph.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from model.architectures import build_model

COMBINE = "mean_probability"


class FoldEnsemble(nn.Module):
    """``members`` (same architecture and classes) -> log of their mean probabilities."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # log(mean_i softmax(z_i)) = logsumexp_i(log_softmax(z_i)) - log k: no underflow even
        # where one member is certain and another is not.
        log_probs = torch.stack([F.log_softmax(m(x).float(), dim=1) for m in self.members])
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))


def forward_gflops(arch: str, num_classes: int, input_size: int, members: int = 1) -> float:
    """Giga floating-point operations of one image's forward pass (a multiply-add counts 2).

    Counted on a network built on the ``meta`` device: shapes only, no weights, no arithmetic
    (~50 ms for resnet18). An ensemble costs ``members`` times one member.
    """
    with torch.device("meta"):
        shadow = build_model(arch, num_classes).eval()
        image = torch.empty((1, 3, input_size, input_size))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        shadow(image)
    return members * counter.get_total_flops() / 1e9
