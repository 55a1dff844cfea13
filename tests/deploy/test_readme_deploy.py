"""The README's deploy commands name services, profiles, files and training flags that exist."""

from __future__ import annotations

import re
import shlex

import pytest

from tests.deploy.parsing import COMPOSE_FILE, REPO_ROOT, load_compose
from training.cli import build_parser

SECTION = re.search(
    r"<!-- section:deploy -->(.*?)<!-- /section:deploy -->",
    (REPO_ROOT / "README.md").read_text(),
    re.S,
).group(1)
SERVICES = load_compose(COMPOSE_FILE)["services"]


def _compose_commands() -> list[list[str]]:
    """Every `docker compose ...` in the section's code blocks, commented-out ones included."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", SECTION, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.lstrip("# ").strip()
            if line.startswith("docker compose"):
                words = shlex.split(line, comments=True)
                # Only this command, not what follows `&&`.
                commands.append(words[: words.index("&&")] if "&&" in words else words)
    return commands


COMMANDS = _compose_commands()


def test_section_covers_the_workflow() -> None:
    text = " ".join(" ".join(command) for command in COMMANDS)
    for step in ("build", "--profile train run --rm train fit", "up -d", "restart api"):
        assert step in text, step
    for needed in ("NVIDIA Container Toolkit", "/health/ready", "/metrics", "COMPOSE_FILE="):
        assert needed in SECTION, needed


def test_named_services_and_profiles_exist() -> None:
    profiles = {p for service in SERVICES.values() for p in service.get("profiles", [])}
    for command in COMMANDS:
        if "--profile" in command:
            assert command[command.index("--profile") + 1] in profiles, command
        if "run" in command:
            rest = command[command.index("run") + 1 :]
            service = next(word for i, word in enumerate(rest) if _is_positional(rest, i))
            assert service in SERVICES, command


@pytest.mark.parametrize(
    "command",
    [c for c in COMMANDS if "train" in c and "run" in c and "--entrypoint" not in c],
    ids=lambda c: " ".join(c[c.index("train", c.index("run")) + 1 :])[:40],
)
def test_training_commands_parse_and_use_the_mounts(command: list[str]) -> None:
    args = command[command.index("train", command.index("run")) + 1 :]
    if args == ["--help"]:
        return
    parsed = build_parser().parse_args(args)  # argparse exits on an unknown flag
    if getattr(parsed, "data", None) is not None:
        assert str(parsed.data) == "/data"
    assert str(parsed.output) == "/models/model.safetensors"  # where the API reads it


def test_compose_file_settings_name_existing_files() -> None:
    settings = re.findall(r"COMPOSE_FILE=(\S+)", SECTION)
    assert any("docker-compose.cpu.yml" in files for files in settings)  # the CPU override
    assert any("docker-compose.scale.yml" in files for files in settings)  # scale-out
    for files in settings:
        for name in files.split(":"):
            assert (REPO_ROOT / name).is_file(), name


def test_scripts_and_proxy_files_it_names_exist() -> None:
    for path in re.findall(r"`?(deploy/[\w./-]+)", SECTION):
        path = path.rstrip(".`")
        if path == "deploy/invasive.env":  # the user's own copy of the example
            path += ".example"
        assert (REPO_ROOT / path).exists(), path


def _is_positional(words: list[str], index: int) -> bool:
    """Whether words[index] is a positional argument of `docker compose run`."""
    takes_value = {"-v", "--volume", "-e", "--env", "--entrypoint", "-u", "--user", "-w"}
    word = words[index]
    return not word.startswith("-") and (index == 0 or words[index - 1] not in takes_value)
