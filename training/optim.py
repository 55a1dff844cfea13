"""AdamW with linear warm-up, then cosine decay or one-cycle; stepped once per batch.

Fine-tuning pretrained weights can give the backbone a lower learning rate than the new
classifier head, or freeze it (learning rate 0) for the first steps.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from model.architectures import classifier_head_name
from training.config import FitConfig

SCHEDULES = ("cosine", "onecycle")


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, *,
                    backbone_lr_scale: float = 1.0, split_head: bool = False
                    ) -> torch.optim.AdamW:
    """AdamW; biases and norm-layer weights (1-D tensors) get no weight decay, as is standard.

    ``split_head`` (or a ``backbone_lr_scale`` other than 1): the classifier head's parameters
    come first, at ``lr``; the rest form groups marked ``backbone`` at ``lr * backbone_lr_scale``
    (``build_schedule`` can hold those at zero while the backbone is frozen).
    """
    if not split_head and backbone_lr_scale == 1.0:
        named = [("", list(model.parameters()), lr)]
    else:
        head = model.get_submodule(classifier_head_name(model))
        head_ids = {id(p) for p in head.parameters()}
        named = [("head", [p for p in model.parameters() if id(p) in head_ids], lr),
                 ("backbone", [p for p in model.parameters() if id(p) not in head_ids],
                  lr * backbone_lr_scale)]
    groups = []
    for part, params, group_lr in named:
        trainable = [p for p in params if p.requires_grad]
        mark = {"backbone": part == "backbone"} if part else {}
        groups += [{"params": [p for p in trainable if p.ndim > 1], "weight_decay": weight_decay,
                    "lr": group_lr, **mark},
                   {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0,
                    "lr": group_lr, **mark}]
    return torch.optim.AdamW(groups, lr=lr)


def build_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, kind: str = "cosine",
    frozen_steps: int = 0,
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step learning-rate multiplier: linear warm-up from 1 %, then cosine to 1 % of peak.

    ``onecycle`` uses torch's OneCycleLR (cosine annealing, warm-up as its rising phase).
    ``frozen_steps``: groups marked ``backbone`` (``build_optimizer``) get no learning rate for
    that many steps, then a linear warm-up of ``warmup_steps`` of their own.
    """
    total_steps = max(1, total_steps)
    if frozen_steps and kind != "cosine":
        raise ValueError("freezing the backbone needs the cosine schedule")
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

    if not frozen_steps:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def backbone_factor(step: int) -> float:
        if step < frozen_steps:
            return 0.0
        ramp = min(1.0, (step - frozen_steps + 1) / max(1, warmup_steps))
        return factor(step) * ramp

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, [backbone_factor if g.get("backbone") else factor
                    for g in optimizer.param_groups])


def build_optimizer_and_schedule(
    model: nn.Module, config: FitConfig, steps_per_epoch: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LRScheduler]:
    """``fit``'s optimiser and schedule from its config. ``--freeze-epochs`` and
    ``--backbone-lr-scale`` apply to pretrained weights only (from scratch there is no backbone
    worth protecting)."""
    pretrained = config.weights != "none"
    frozen = round(steps_per_epoch * config.freeze_epochs) if pretrained else 0
    scale = config.backbone_lr_scale if pretrained else 1.0
    optimizer = build_optimizer(model, config.lr, config.weight_decay, backbone_lr_scale=scale,
                                split_head=frozen > 0)
    schedule = build_schedule(optimizer, steps_per_epoch * config.epochs,
                              round(steps_per_epoch * config.warmup_epochs), config.schedule,
                              frozen_steps=frozen)
    return optimizer, schedule
