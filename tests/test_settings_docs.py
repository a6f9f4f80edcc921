"""Every setting is documented: a docstring, a line in .env.example, a row in the README's table."""

from __future__ import annotations

import ast
import re
from itertools import pairwise

import pytest

from app.config import Settings
from tests.conftest import ROOT


def _documented_fields() -> set[str]:
    """Fields of Settings followed by a string literal (an attribute docstring)."""
    tree = ast.parse((ROOT / "app" / "config.py").read_text())
    (settings,) = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Settings"]
    return {
        field.target.id
        for field, following in pairwise(settings.body)
        if isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name)
        if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
    }


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_setting_is_documented(name: str) -> None:
    variable = name.upper()
    assert name in _documented_fields(), f"{name} has no docstring in Settings"
    assert re.search(rf"^#? ?{variable}=", (ROOT / ".env.example").read_text(), re.MULTILINE), variable
    assert f"`{variable}`" in (ROOT / "README.md").read_text(), variable
