"""Test helper: ``fit`` with every BatchNorm layer swapped for GroupNorm (DDP-vs-single test).

PyTorch has no CPU SyncBatchNorm, so on CPU each DDP rank normalises its own share of a batch:
the one known difference between a DDP run and a single process with the same global batch.
With per-image normalisation (GroupNorm) there is none left, so a DDP run must reproduce the
single-process run up to the order of floating-point sums. Run this file under torchrun with the
CLI's arguments (``torchrun ... groupnorm_fit.py fit --data ...``), or patch
:func:`build_without_batchnorm` in place of ``training.fit.build_initial_model`` in-process.
"""

from __future__ import annotations

import sys

import torch.nn as nn

import training.fit

_build_initial_model = training.fit.build_initial_model


def swap_batchnorm(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.GroupNorm(1, child.num_features))
        else:
            swap_batchnorm(child)
    return module


def build_without_batchnorm(arch: str, num_classes: int, weights: str) -> nn.Module:
    return swap_batchnorm(_build_initial_model(arch, num_classes, weights))


if __name__ == "__main__":
    training.fit.build_initial_model = build_without_batchnorm
    from training.cli import main

    raise SystemExit(main(sys.argv[1:]))
