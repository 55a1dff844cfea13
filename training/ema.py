"""An exponential moving average (EMA) of a model's weights, for ``fit --ema-decay``.

After every optimiser step each floating-point parameter of the copy moves towards the live
model's: ``ema = d * ema + (1 - d) * live``, and so do the floating-point buffers (BatchNorm
running statistics), as timm's ``ModelEmaV2`` and ``AveragedModel(use_buffers=True)`` do; integer
buffers (batch counters) are copied. Copying the running statistics instead paired the averaged
weights with statistics of the live weights, which from scratch (weights moving fast) broke
validation: rows m2/r2 of docs/benchmarks.md, measured that way, against m8/r8.
Early in a run ``d`` is capped at ``1 - 1 / (updates + 1)``, so the copy starts as a plain mean
of the weights seen so far instead of remembering the random initialisation for ``1 / (1 - d)``
steps. Validation scores the copy and the checkpoint saves it; the training state keeps it, so a
resumed run continues the same average.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn


class WeightEma:
    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.source = model  # the bare module (never a DDP wrapper)
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        d = min(self.decay, 1.0 - 1.0 / self.updates)
        for mine, theirs in zip(self.module.parameters(), self.source.parameters(), strict=True):
            mine.lerp_(theirs.detach(), 1.0 - d)
        for mine, theirs in zip(self.module.buffers(), self.source.buffers(), strict=True):
            if mine.is_floating_point():
                mine.lerp_(theirs.detach(), 1.0 - d)
            else:
                mine.copy_(theirs)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "decay": self.decay,
                "model": {k: v.detach().cpu().contiguous()
                          for k, v in self.module.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["model"])


def restore_ema(ema: WeightEma | None, state: dict[str, Any], state_file: Any) -> None:
    """Continue the average saved in a training state; a state without one cannot give it."""
    if ema is None:
        return
    if "ema" not in state:
        from training.errors import TrainingError

        raise TrainingError(f"--resume: {state_file} was written without --ema-decay; resume "
                            "with the options it was started with, or start afresh")
    ema.load_state_dict(state["ema"])
