"""The container test: the real image, built and run by a real Docker engine, through the
README's compose flows. Run by ``make container-test`` (which ``.ci/run`` calls); skipped by
the plain test run, which must stay a few minutes on 2 cores."""

from __future__ import annotations

import os
import socket

import pytest

from tests.container import engine
from tests.container.timeline import report

ENABLED = os.environ.get("INVASIVE_CONTAINER_TEST") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ENABLED:
        return
    skip = pytest.mark.skip(reason="container test: run by `make container-test`")
    for item in items:
        if "tests/container/" in item.nodeid:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 (pytest's own type)
    if ENABLED:
        terminalreporter.section("container test: where the time went")
        for line in report():
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def docker_images() -> tuple[str, str]:
    """(service image, proxy image), built on a Docker engine this fixture makes sure of."""
    reason = engine.ensure_engine() or engine.free_disk_reason()
    if reason:
        pytest.skip(f"container test skipped: {reason}")
    service, proxy = engine.build_images()
    print(f"[container-test] service image {engine.image_size_gb(service):.2f} GB, "
          f"proxy image {engine.image_size_gb(proxy):.2f} GB")
    return service, proxy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
