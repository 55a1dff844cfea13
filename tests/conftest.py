"""Shared fixtures. ``demo_checkpoint`` is a real checkpoint trained by ``training.fit`` on
generated images (a few seconds, once per test session); tests must not modify it."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.demo import build_demo_checkpoint


@pytest.fixture(scope="session")
def demo_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path to a small resnet18 demo checkpoint (64 px, metadata ``demo=True``)."""
    return build_demo_checkpoint(tmp_path_factory.mktemp("demo-checkpoint") / "demo.safetensors")
