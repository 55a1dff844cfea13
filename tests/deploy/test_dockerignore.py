"""What reaches the image build: exactly the sources it installs, never venvs, data or secrets."""

from __future__ import annotations

import pytest

from tests.deploy.parsing import dockerfile_stages, dockerignore_excludes, dockerignore_patterns

PATTERNS = dockerignore_patterns()


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "tests/deploy/test_compose.py",
        "models/model.safetensors",
        "data/train/0001.jpg",
        "data",
        "runs/fit/metrics.json",
        "deploy/invasive.env",  # holds the API key
        "model/__pycache__/checkpoint.cpython-311.pyc",
        "app/stray-checkpoint.safetensors",
        ".pytest_cache/v/cache/lastfailed",
        "benchmarks/results/raw/run.json",
    ],
)
def test_excluded_from_the_build_context(path: str) -> None:
    assert dockerignore_excludes(PATTERNS, path)


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "README.md",
        "model/checkpoint.py",
        "training/cli.py",
        "app/__main__.py",
        "deploy/check_checkpoint.py",
    ],
)
def test_sources_reach_the_build_context(path: str) -> None:
    assert not dockerignore_excludes(PATTERNS, path)


def test_every_copy_source_survives_dockerignore() -> None:
    # A COPY of an ignored path fails the build with "not found", far from the cause.
    for stage in dockerfile_stages():
        for instruction in stage.all("COPY"):
            if instruction.args.startswith("--from"):
                continue
            for source in instruction.args.split()[:-1]:
                assert not dockerignore_excludes(PATTERNS, source), source


def test_matcher_follows_dockerignore_rules() -> None:
    # The matcher itself, on the rules the assertions above rely on.
    assert dockerignore_excludes(["*"], "a/b/c")
    assert not dockerignore_excludes(["*", "!a/"], "a/b/c")
    assert dockerignore_excludes(["*", "!a/", "**/*.pyc"], "a/b/c.pyc")
    assert not dockerignore_excludes(["data"], "database.py")
    assert dockerignore_excludes(["data"], "data/x.jpg")
