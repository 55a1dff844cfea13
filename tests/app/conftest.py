"""Fixtures for the service tests: a tiny checkpoint, settings, a running app, test images."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

# Starlette's TestClient warns that it will move to "httpx2"; it works, and the warning would
# only add noise to every test run.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
from fastapi.testclient import TestClient  # noqa: E402

from app.config import Settings  # noqa: E402
from app.main import create_app  # noqa: E402


@pytest.fixture(scope="package", autouse=True)
def single_threaded_torch_in_the_test_thread() -> Iterator[None]:
    """Reference scoring in the test's own (main) thread runs single-threaded.

    On the 2-vCPU dev VM a two-thread OpenMP team driven from the Python main thread spins
    pathologically (resnet18 at 64 px, batch 1: 640 ms per call, vs 8 ms from any other thread
    or 6.5 ms single-threaded). The service under test runs its model on its own thread with its
    own setting, so this only speeds up the tests' offline reference scoring.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def service_checkpoint(demo_checkpoint: Path) -> Path:
    """The session's demo checkpoint, trained by the real training code (64 px input, so every
    forward pass in these tests is cheap)."""
    return demo_checkpoint


class EnvironmentFreeSettings(Settings):
    """Settings from keyword arguments only: a developer's INVASIVE_* variables can't leak in."""

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, **sources):
        return (init_settings,)


def isolated_settings(checkpoint: Path, **overrides) -> Settings:
    """Small, deterministic settings for a test app (fp32 on CPU, eager, one torch thread)."""
    values = dict(
        checkpoint=checkpoint,
        device="cpu",
        precision="fp32",
        engine="eager",  # the engines have their own tests (tests/model/test_engines.py)
        max_batch_size=8,
        torch_threads=1,
        decode_processes=2,
    )
    values.update(overrides)
    return EnvironmentFreeSettings(**values)


@pytest.fixture
def make_settings(service_checkpoint: Path):
    """``make_settings(**overrides)``: :func:`isolated_settings` for the test checkpoint (or
    ``checkpoint=`` another)."""
    def settings(checkpoint: Path = service_checkpoint, **overrides) -> Settings:
        return isolated_settings(checkpoint, **overrides)

    return settings


@pytest.fixture
def client_for(make_settings) -> Iterator:
    """``client_for(**settings)``: a TestClient on a started app (lifespan run, model warm)."""
    clients: list[TestClient] = []

    def _client(**overrides) -> TestClient:
        client = TestClient(create_app(make_settings(**overrides)), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield _client
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def client(service_checkpoint: Path) -> Iterator[TestClient]:
    """A started app with default test settings, shared by a module's tests."""
    settings = isolated_settings(service_checkpoint)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def reference_classifier(service_checkpoint: Path):
    """The checkpoint scored in-process at fp32, batch by batch: what the service must match."""
    from model.inference import Classifier

    return Classifier.from_checkpoint(service_checkpoint, device="cpu", precision="fp32")


def expected_probabilities(classifier, data: bytes) -> list[float]:
    """Offline scoring of ``data``: the same decode + preprocess + forward, no service."""
    from model.preprocessing import prepare_input

    return classifier.predict_probabilities(prepare_input(data, classifier.spec)[None])[0].tolist()
