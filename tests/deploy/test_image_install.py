"""The builder stage's `pip install .`, replayed without Docker.

The image installs the project as a regular (non-editable) package and keeps only the venv, so
anything setuptools leaves out of the wheel is missing in production while every test run from
the source tree still passes. This assembles the build context the way the Dockerfile's COPY
lines and .dockerignore do, builds the wheel from it and compares it with the source tree.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.deploy.parsing import (
    REPO_ROOT,
    dockerfile_stages,
    dockerignore_excludes,
    dockerignore_patterns,
)


def _builder_context(destination: Path) -> list[str]:
    """Copy what the builder stage COPYs (after .dockerignore) into ``destination``."""
    patterns = dockerignore_patterns()
    sources = [
        source.strip("/")
        for instruction in next(s for s in dockerfile_stages() if s.name == "builder").all("COPY")
        if not instruction.args.startswith("--")
        for source in instruction.args.split()[:-1]
    ]
    copied: list[str] = []
    for source in sources:
        root = REPO_ROOT / source
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for file in files:
            relative = file.relative_to(REPO_ROOT).as_posix()
            if dockerignore_excludes(patterns, relative):
                continue
            (destination / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, destination / relative)
            copied.append(relative)
    return copied


def test_wheel_built_in_the_image_holds_every_package_file(tmp_path: Path) -> None:
    context = tmp_path / "context"
    copied = _builder_context(context)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--wheel-dir",
            str(tmp_path / "dist"),
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()

    package_files = {name for name in copied if "/" in name and not name.endswith((".pyc", ".pyo"))}
    assert {"model/checkpoint.py", "app/__main__.py", "training/cli.py"} <= package_files
    missing = sorted(package_files - names)
    assert not missing, f"in the source tree but not in the image's install: {missing}"
    assert "invasive-api = app.__main__:main" in scripts
    assert "invasive-train = training.cli:main" in scripts
