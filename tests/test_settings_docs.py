"""Every setting is documented: a docstring, a line in .env.example, a row in docs/configuration.md,
and that page's reference is what `scripts/docs-config` generates from the code today."""

from __future__ import annotations

import re

import pytest

from app.config import Settings
from scripts import docs_config
from tests.conftest import ROOT

CONFIGURATION = ROOT / "docs" / "configuration.md"


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_setting_is_documented(name: str) -> None:
    variable = docs_config.variable(name)
    assert Settings.model_fields[name].description, f"{name} has no docstring in Settings"
    assert re.search(rf"^#? ?{variable}=", (ROOT / ".env.example").read_text(), re.MULTILINE), variable
    assert re.search(rf"^\| `{variable}` \|", CONFIGURATION.read_text(), re.MULTILINE), variable


def test_configuration_reference_is_generated_from_the_settings() -> None:
    page = CONFIGURATION.read_text()
    assert docs_config.page_with_reference(page) == page, (
        "docs/configuration.md differs from app.config.Settings: run scripts/docs-config"
    )


def test_reference_shows_each_settings_type_default_and_docstring() -> None:
    rows = {line.split(" | ")[0].strip("| `"): line for line in docs_config.render().splitlines()[2:]}
    assert list(rows) == [name.upper() for name in Settings.model_fields]
    assert rows["MAX_CONCURRENT_TASKS"] == (
        "| `MAX_CONCURRENT_TASKS` | integer, ≥ 1, ≤ 32 | `2` | Tasks transcribed at once; each has its own worker "
        "process holding the models. |"
    )
    assert "| `TASK_STORE` | `memory` \\| `sqlite` | `memory` |" in rows["TASK_STORE"]
    assert "| `API_KEYS` | secret text | unset |" in rows["API_KEYS"]
    assert "| `MAX_UPLOAD_MB` | number, > 0 | `500` |" in rows["MAX_UPLOAD_MB"]
