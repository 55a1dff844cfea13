"""The service raises its soft open-file limit toward the hard one (app/server.py)."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from app.server import OPEN_FILES_WANTED

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX resource limits")

PROBE = (
    "import resource; from app.server import raise_open_file_limit as r; "
    "print(*r(), *resource.getrlimit(resource.RLIMIT_NOFILE))"
)


def _run_with_soft_limit(soft: int) -> list[int]:
    def lower() -> None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    out = subprocess.run(
        [sys.executable, "-c", PROBE], preexec_fn=lower, capture_output=True, text=True,
        check=True,
    ).stdout
    return [int(x) for x in out.split()]


def test_a_low_soft_limit_is_raised_to_the_hard_limit_or_the_cap():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    before, after, soft_now, hard_now = _run_with_soft_limit(256)
    expected = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else min(OPEN_FILES_WANTED, hard)
    assert before == 256
    assert after == soft_now == max(256, expected)
    assert hard_now == hard  # the hard limit is never touched


def test_a_high_soft_limit_is_left_alone():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    high = hard if hard != resource.RLIM_INFINITY else OPEN_FILES_WANTED * 2
    before, after, soft_now, _ = _run_with_soft_limit(high)
    assert before == after == soft_now == high
