"""AdamW with linear warm-up, then cosine decay or one-cycle; stepped once per batch."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

SCHEDULES = ("cosine", "onecycle")


def build_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; biases and norm-layer weights (1-D tensors) get no weight decay, as is standard."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
    )


def build_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, kind: str = "cosine"
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step learning-rate multiplier: linear warm-up from 1 %, then cosine to 1 % of peak.

    ``onecycle`` uses torch's OneCycleLR (cosine annealing, warm-up as its rising phase).
    """
    total_steps = max(1, total_steps)
    if kind == "onecycle":
        max_lrs = [g["lr"] for g in optimizer.param_groups]
        pct = min(0.5, max(warmup_steps / total_steps, 1.0 / total_steps))
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lrs, total_steps=total_steps, pct_start=pct,
            cycle_momentum=False,
        )
    if kind != "cosine":
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return 0.01 + 0.99 * step / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
