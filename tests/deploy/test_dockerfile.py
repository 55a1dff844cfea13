"""The Dockerfile's promises to an operator, read from the file (no Docker engine here)."""

from __future__ import annotations

import re
import tomllib

import pytest

from tests.deploy.parsing import DOCKERFILE, REPO_ROOT, Stage, dockerfile_stages

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return dockerfile_stages(DOCKERFILE)


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def test_multi_stage_build_on_one_pinned_slim_python(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    assert [stage.name for stage in stages[:-1]] == ["requirements", "builder"]
    bases = {stage.base for stage in stages}
    # One base for all stages: the venv copied into the final stage links to its python.
    assert len(bases) == 1, bases
    (base,) = bases
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", base), base


def test_final_stage_copies_only_the_venv_and_the_model_check(final: Stage) -> None:
    copies = [instruction.args for instruction in final.all("COPY")]
    # No source tree, tests or build leftovers: only the installed venv (its dependencies, then
    # the project's own packages laid over it as a small layer) and the one script.
    assert copies == [
        "--from=builder /opt/venv /opt/venv",
        "--from=builder /opt/project /opt/venv",
        "deploy/check_checkpoint.py /opt/invasive/check_checkpoint.py",
    ]
    assert not final.all("ADD")


def test_no_compilers_or_package_caches_in_the_final_stage(final: Stage) -> None:
    for instruction in final.all("RUN"):
        assert not re.search(r"\b(apt-get|apt|pip)\s+install\b", instruction.args), instruction


def test_pip_in_the_builder_keeps_no_cache(stages: list[Stage]) -> None:
    assert _builder(stages).env().get("PIP_NO_CACHE_DIR") == "1"


def test_runs_as_a_non_root_numeric_user(final: Stage) -> None:
    users = final.all("USER")
    assert users, "no USER: the container would run as root"
    user = users[-1].args.replace("${APP_UID}", _arg_default(final, "APP_UID"))
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, user
    assert not gid or (gid.isdigit() and int(gid) != 0), user
    # The user must exist and own the model volume's mount point (training writes there).
    created = " ".join(instruction.args for instruction in final.all("RUN"))
    assert "useradd" in created and "/models" in created


def test_healthcheck_probes_readiness_with_python_only(final: Stage) -> None:
    (healthcheck,) = final.all("HEALTHCHECK")
    command = healthcheck.exec_form()
    assert command[:2] == ["python", "-c"]
    assert "/health/ready" in command[2]
    assert "INVASIVE_PORT" in command[2]  # follows the port the service listens on
    assert "--start-period=" in healthcheck.args  # model load and warm-up are not failures


def test_cmd_is_the_readme_console_script(final: Stage) -> None:
    (cmd,) = final.all("CMD")
    assert cmd.exec_form() == ["invasive-api"]
    assert "invasive-api" in PYPROJECT["project"]["scripts"]
    assert not final.all("ENTRYPOINT")  # so `command: [invasive-train]`-style overrides work


def test_container_settings_come_from_env(final: Stage) -> None:
    env = final.env()
    assert env["INVASIVE_HOST"] == "0.0.0.0"
    assert env["INVASIVE_CHECKPOINT"] == "/models/model.safetensors"
    assert env["INVASIVE_PORT"] == "8000"
    exposed = " ".join(instruction.args for instruction in final.all("EXPOSE"))
    assert env["INVASIVE_PORT"] in exposed.split()
    volumes = " ".join(instruction.args for instruction in final.all("VOLUME"))
    assert "/models" in volumes
    assert env["PATH"].startswith("/opt/venv/bin:")


def test_torch_pins_match_pyproject(stages: list[Stage]) -> None:
    pinned = _pins(PYPROJECT["project"]["dependencies"])
    assert set(pinned) == {"torch", "torchvision"}
    builder_runs = " ".join(instruction.args for instruction in _builder(stages).all("RUN"))
    installed = dict(re.findall(r"\b(torch|torchvision)==([\w.+]+)", builder_runs))
    assert installed == pinned


def test_builder_copies_every_package_pyproject_installs(stages: list[Stage]) -> None:
    copied = {
        source.strip("/")
        for instruction in _builder(stages).all("COPY")
        if not instruction.args.startswith("--")
        for source in instruction.args.split()[:-1]  # the last word is the destination
    }
    includes = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in includes}
    assert packages <= copied, f"not copied into the image: {packages - copied}"
    # setuptools reads README.md for the package metadata.
    assert {"pyproject.toml", "README.md"} <= copied
    for source in copied:
        assert (REPO_ROOT / source).exists(), source


def _builder(stages: list[Stage]) -> Stage:
    return next(stage for stage in stages if stage.name == "builder")


def test_requirements_stage_lists_exactly_the_runtime_dependencies(stages: list[Stage]) -> None:
    # The builder installs the dependencies from this list (cached while they do not change);
    # it must be pyproject's runtime list, nothing from the dev extras.
    (run,) = stages[0].all("RUN")
    assert "tomllib" in run.args and "['project']['dependencies']" in run.args
    copies = [instruction.args for instruction in _builder(stages).all("COPY")]
    assert "--from=requirements /requirements.txt ./" in copies
    installs = " ".join(instruction.args for instruction in _builder(stages).all("RUN"))
    assert "pip install -r requirements.txt" in installs
    assert "--no-deps" in installs  # the project itself adds nothing unlisted


def _pins(requirements: list[str]) -> dict[str, str]:
    pins = {}
    for requirement in requirements:
        match = re.fullmatch(r"(torch|torchvision)==([\w.+]+)", requirement.strip())
        if match:
            pins[match.group(1)] = match.group(2)
    return pins


def _arg_default(stage: Stage, name: str) -> str:
    for instruction in stage.all("ARG"):
        key, _, default = instruction.args.partition("=")
        if key == name:
            return default
    raise AssertionError(f"ARG {name} has no default in the final stage")
