"""One training epoch, and scoring through the service's own :class:`model.inference.Classifier`.

Validation deliberately does not reuse the training forward pass: it copies the model into a
``Classifier`` (the class the service and ``predict`` use, with their dtype and memory layout)
and feeds it tensors made by ``model.preprocessing.prepare_input``. The metrics and the decision
threshold stored in the checkpoint are therefore measured on exactly what the service computes.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from model.checkpoint import CheckpointMetadata
from model.inference import Classifier, autocast_context
from model.preprocessing import PreprocessSpec, normalize_batch
from training import distributed
from training.augment import augment_batch
from training.ema import WeightEma


@dataclass
class EpochStats:
    loss: float
    images: int
    seconds: float
    data_seconds: float  # waiting for the loader (decode, augmentation, collation)
    compute_seconds: float  # forward, backward, optimiser step

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    *,
    device: torch.device,
    precision: str,
    spec: PreprocessSpec,
    scaler: torch.amp.GradScaler | None = None,
    desc: str = "train",
    label_smoothing: float = 0.0,
    ema: WeightEma | None = None,
    augment: str = "field",
    mixup: float = 0.0,
) -> EpochStats:
    """One pass over ``loader``; ``ema`` (if any) is updated after every optimiser step.

    ``mixup`` > 0: each batch is blended with a shuffled copy of itself, ``lam * x + (1 - lam) *
    x[partner]`` with one ``lam ~ Beta(mixup, mixup)`` per batch, and the loss blended the same
    way. Partners are drawn within this process's rows (under DDP, within the rank's share).
    """
    model.train()
    total_loss, seen, data_s, compute_s = 0.0, 0, 0.0, 0.0
    start = tick = time.perf_counter()
    # Under DDP each rank holds rows r, r+W, ... of the global batch: augmentation draws for the
    # whole batch and keeps those rows, so the ranks together augment it as one process would.
    shard = (distributed.get_rank(), distributed.get_world_size())
    bar = tqdm(loader, desc=desc, leave=False, unit="batch", mininterval=1.0,
               disable=not distributed.is_main())
    for images, labels in bar:
        loaded = time.perf_counter()
        data_s += loaded - tick
        x = augment_batch(images.to(device, non_blocking=True), shard=shard,
                          aerial=augment == "aerial")
        y = labels.to(device, non_blocking=True)
        lam, partner = mixup_draw(len(y), mixup)
        if partner is not None:
            x = lam * x + (1.0 - lam) * x[partner.to(x.device)]
        x = normalize_batch(x, spec)
        x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, precision):
            logits = model(x).float()
        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        if partner is not None:
            partner_y = y[partner.to(y.device)]
            loss = lam * loss + (1.0 - lam) * F.cross_entropy(
                logits, partner_y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:  # fp16 on CUDA needs loss scaling; bf16 does not
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        schedule.step()
        if ema is not None:
            ema.update()
        batch_loss = loss.item()  # also synchronises CUDA, so the compute time below is real
        total_loss += batch_loss * len(y)
        seen += len(y)
        bar.set_postfix(loss=f"{batch_loss:.3f}", refresh=False)
        tick = time.perf_counter()
        compute_s += tick - loaded
    seconds = time.perf_counter() - start
    return EpochStats(total_loss / max(1, seen), seen, seconds, data_s, compute_s)


def mixup_draw(n: int, alpha: float) -> tuple[float, torch.Tensor | None]:
    """Mixup's blend share and each row's partner (``None``: no mixup for this batch).

    Drawn from torch's global generator, which ``epoch_loader`` seeds per epoch, so a resumed
    run repeats them."""
    if alpha <= 0 or n < 2:
        return 1.0, None
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    return lam, torch.randperm(n)


def score_with_classifier(
    model: nn.Module,
    metadata: CheckpointMetadata,
    images: torch.Tensor,
    *,
    device: torch.device,
    precision: str,
    batch_size: int = 64,
) -> np.ndarray:
    """Probabilities (N, classes) of uint8 ``prepare_input`` tensors, as the service computes."""
    classifier = Classifier(copy.deepcopy(model), metadata, device, precision)
    chunks = [
        classifier.predict_probabilities(images[i : i + batch_size])
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(chunks) if chunks else np.zeros((0, len(metadata.class_names)))
