"""Every invasive-train command in the README's training section parses with the real CLI."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from training.cli import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = re.search(r"<!-- section:training -->(.*?)<!-- /section:training -->",
                    README.read_text(), re.S).group(1)
COMMANDS = [
    shlex.split(line, comments=True)
    for block in re.findall(r"```bash\n(.*?)```", SECTION, re.S)
    for line in block.replace("\\\n", " ").splitlines()
    if line.strip().startswith("invasive-train")
]


def test_section_shows_every_command():
    assert {c[1] for c in COMMANDS} >= {"eda", "fit", "evaluate", "predict"}
    assert any("--folds" in c and "--group-column" in c for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[1:3]))
def test_command_parses(command):
    args = build_parser().parse_args(command[1:])
    assert args.command == command[1]


def test_flag_table_names_real_flags():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    fit_flags = {opt for action in commands["fit"]._actions for opt in action.option_strings}
    table = "\n".join(line for line in SECTION.splitlines() if line.startswith("| `--"))
    table_flags = set(re.findall(r"`(--[a-z-]+)`", table))
    assert {"--arch", "--keep-train-state", "--json"} <= table_flags <= fit_flags
    # Any flag the section's prose names belongs to some invasive-train command.
    known = {opt for p in [parser, *commands.values()] for action in p._actions
             for opt in action.option_strings}
    assert set(re.findall(r"`(--[a-z-]+)`", SECTION)) <= known
