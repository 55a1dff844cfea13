"""deploy/invasive.env.example documents the service's real settings and their real defaults."""

from __future__ import annotations

import re

from app.config import Settings
from tests.deploy.parsing import REPO_ROOT, load_compose

EXAMPLE = REPO_ROOT / "deploy" / "invasive.env.example"
LINE = re.compile(r"#?\s*(INVASIVE_\w+)=(.*)")
# Set by docker-compose.yml itself: the port mapping, health check and volume depend on them.
FIXED_BY_COMPOSE = {"INVASIVE_HOST", "INVASIVE_PORT", "INVASIVE_CHECKPOINT"}


def _documented() -> dict[str, str]:
    settings = {}
    for line in EXAMPLE.read_text().splitlines():
        match = LINE.fullmatch(line.strip())
        if match:
            settings[match.group(1)] = match.group(2)
    return settings


def test_every_documented_setting_exists() -> None:
    fields = {f"INVASIVE_{name.upper()}" for name in Settings.model_fields}
    documented = set(_documented())
    assert documented <= fields, f"not settings of the service: {documented - fields}"
    # Everything an operator may set in the env file is documented there.
    assert fields - FIXED_BY_COMPOSE <= documented, fields - FIXED_BY_COMPOSE - documented


def test_documented_values_are_the_defaults(monkeypatch) -> None:
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"INVASIVE_{name.upper()}", raising=False)
    defaults = Settings()
    for key, value in _documented().items():
        monkeypatch.setenv(key, value)
    assert Settings() == defaults


def test_compose_fixes_what_the_example_leaves_out() -> None:
    api_env = load_compose(REPO_ROOT / "docker-compose.yml")["services"]["api"]["environment"]
    assert set(api_env) == FIXED_BY_COMPOSE
    assert not FIXED_BY_COMPOSE & set(_documented())
