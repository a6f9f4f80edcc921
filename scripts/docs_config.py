"""The settings reference in docs/configuration.md, generated from `app.config.Settings`.

Each setting's variable, type, default and description come from the class itself (the description
is the field's docstring), so the page cannot drift from the code. `scripts/docs-config` rewrites the
part of the page between the markers; `tests/test_settings_docs.py` fails when it is out of date.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Literal, Union, get_args, get_origin

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from app.config import Settings

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
BEGIN = "<!-- settings-reference:begin -->"
END = "<!-- settings-reference:end -->"

_TYPE_NAMES: dict[object, str] = {
    str: "text",
    int: "integer",
    float: "number",
    bool: "`true` \\| `false`",
    Path: "path",
    SecretStr: "secret text",
}
_BOUNDS: list[tuple[type[object], str, str]] = [
    (annotated_types.Ge, "ge", "≥"),
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "≤"),
    (annotated_types.Lt, "lt", "<"),
]


def variable(name: str) -> str:
    """The environment variable that sets a field."""
    return (str(Settings.model_config.get("env_prefix") or "") + name).upper()


def _type(field: FieldInfo) -> str:
    annotation = field.annotation
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(arg for arg in get_args(annotation) if arg is not type(None))
    if get_origin(annotation) is Literal:
        text = " \\| ".join(f"`{value}`" for value in get_args(annotation))
    else:
        text = _TYPE_NAMES.get(annotation, str(annotation))
    bounds = [
        f"{sign} {getattr(constraint, attribute)}"
        for kind, attribute, sign in _BOUNDS
        for constraint in field.metadata
        if isinstance(constraint, kind)
    ]
    return ", ".join([text, *bounds])


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "see description"  # computed on the machine that runs the service
    value = field.default
    if value is None or value is PydanticUndefined:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render() -> str:
    """The reference table, one row per setting in the order of the class."""
    rows = [
        f"| `{variable(name)}` | {_type(field)} | {_default(field)} | {_cell(field.description or '')} |"
        for name, field in Settings.model_fields.items()
    ]
    return "\n".join(["| Variable | Type | Default | Description |", "|---|---|---|---|", *rows])


def page_with_reference(page: str) -> str:
    """The page with the part between the markers replaced by a freshly rendered reference."""
    head, found, rest = page.partition(BEGIN)
    _, found_end, tail = rest.partition(END)
    if not (found and found_end):
        raise ValueError(f"{PAGE.name} must hold the markers {BEGIN} and {END}")
    return f"{head}{BEGIN}\n{render()}\n{END}{tail}"


def main() -> None:
    updated = page_with_reference(PAGE.read_text())
    if updated != PAGE.read_text():
        PAGE.write_text(updated)
        print(f"wrote {PAGE}", file=sys.stderr)


if __name__ == "__main__":
    main()
