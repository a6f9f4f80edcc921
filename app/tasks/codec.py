"""A task as a flat record of text and numbers, for stores that keep it outside the process.

Each record carries the schema version that wrote it (`schema_version`; records from before versions
have none: version 1). Reading is lenient in both directions, so a field added to `Task` or
`Job` needs no migration code as long as it has a default: an older record lacks it and gets
the default; a newer record's unknown fields are ignored (an older process sharing Redis
during an upgrade). Bump SCHEMA_VERSION, and convert in `from_record`, only when the meaning of
a stored field changes.

Values are validated back into their types by pydantic (from the dataclasses' own type
hints), instead of a hand-written converter per field.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, fields, is_dataclass, replace
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from app.tasks.files import lies_under
from app.tasks.models import Task

SCHEMA_VERSION = 2
"""1: the records written before versions were stored. 2: records carry `schema_version`."""

FIELDS = ("id", "schema_version", *(field.name for field in fields(Task)))
"""Every key of a record: what the SQLite table's columns must be."""

_TASK = TypeAdapter(Task)


def _structured(annotation: Any) -> bool:
    """True for a type stored as JSON text: a dict, a list or a dataclass (optional or not)."""
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    return any(typing.get_origin(option) in (dict, list) or is_dataclass(option) for option in options)


_JSON_FIELDS = frozenset(name for name, hint in typing.get_type_hints(Task).items() if _structured(hint))


def timestamp(value: datetime | None) -> str | None:
    # Fixed width, so text order is time order.
    return value.isoformat(timespec="microseconds") if value else None


def _plain(value: Any) -> Any:
    """A value of a dataclass as JSON would hold it."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime):
        return timestamp(value)
    return value


def _column(name: str, value: Any) -> str | int | float | None:
    if value is None:
        return None
    if name in _JSON_FIELDS:
        document = asdict(value) if is_dataclass(value) and not isinstance(value, type) else value
        return json.dumps(document, default=_plain)
    if isinstance(value, bool):  # stores keep text and numbers only
        return int(value)
    plain = _plain(value)
    return float(plain) if isinstance(plain, float) else plain  # numpy floats too


def to_record(task: Task) -> dict[str, Any]:
    record = {field.name: _column(field.name, getattr(task, field.name)) for field in fields(Task)}
    return {"id": task.id, "schema_version": SCHEMA_VERSION, **record}


class RecordRefused(ValueError):
    """A stored record that must not be acted on: its upload is not its own file in UPLOAD_DIR."""


def from_record(record: Mapping[Any, Any], upload_dir: Path) -> Task:
    """The task of a record written by this or any earlier schema version.

    Raises RecordRefused when the record's upload path is not `upload_dir / task id` (every upload
    is named by its task's id): whoever can write the store (a shared Redis, a copied database)
    must not make the service open or delete files elsewhere, nor another task's upload.
    """
    values = {field.name: record[field.name] for field in fields(Task) if record.get(field.name) is not None}
    for name in _JSON_FIELDS & values.keys():
        values[name] = json.loads(values[name])
    task = _TASK.validate_python(values)
    if (key := task.job.audio_object) is not None:
        # In object storage: the key must be this task's, and the audio's local copy is a scratch
        # file in this process's own UPLOAD_DIR, wherever the API process that wrote it kept its own.
        if not key.endswith(f"/{task.id}") or ".." in key.split("/"):
            raise RecordRefused(f"stored task {task.id!r} points at another object ({key}); ignored")
        task.job = replace(task.job, audio_path=upload_dir / task.id)
    if not lies_under(task.job.audio_path, upload_dir):
        raise RecordRefused(f"stored task {task.id!r} points outside UPLOAD_DIR ({task.job.audio_path}); ignored")
    if task.job.audio_path.resolve() != (upload_dir / task.id).resolve() or record.get("id", task.id) != task.id:
        raise RecordRefused(f"stored task {task.id!r} points at an upload not its own ({task.job.audio_path}); ignored")
    return task
