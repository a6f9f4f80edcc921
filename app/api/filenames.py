"""The names people give: of their files, kept as display data and given back in download headers,
and of speakers, written into transcripts and every export.

A client-chosen name never reaches the file system (uploads are stored under the task id); it is
still cleaned, because it is shown in pages, sent back in headers and written into SRT cues and TSV
rows: no control characters (line breaks and tabs included), bounded in length; of a file name,
only the last path part.
"""

from __future__ import annotations

import unicodedata
from pathlib import PurePosixPath
from urllib.parse import quote, unquote, urlsplit

MAX_NAME_CHARS = 200


def display_name(raw: str | None) -> str | None:
    """The file name as it may be shown, or None when nothing printable is left."""
    if not raw:
        return None
    last_part = raw.replace("\\", "/").rsplit("/", 1)[-1]  # some browsers send the client's whole path
    name = one_line(last_part)
    if len(name) > MAX_NAME_CHARS:
        suffix = PurePosixPath(name).suffix[:16]
        name = name[: MAX_NAME_CHARS - len(suffix) - 1] + "…" + suffix
    return name or None


def one_line(raw: str) -> str:
    """The text on one line: control and format characters (line breaks, tabs, …) become spaces, and
    runs of spaces one."""
    printable = "".join(" " if unicodedata.category(char).startswith("C") else char for char in raw)
    return " ".join(printable.split())


def name_from_url(url: str) -> str | None:
    """The last part of a download URL's path, as a display name (`meeting.mp3`)."""
    return display_name(unquote(urlsplit(url).path))


def attachment(file_name: str | None, fallback: str, extension: str) -> str:
    """A Content-Disposition header naming the download after the upload (`dialogue.srt`).

    RFC 6266: `filename` holds an ASCII stand-in for old clients, `filename*` the name in UTF-8.
    """
    stem = PurePosixPath(file_name).stem if file_name else ""
    name = f"{stem or fallback}.{extension}"
    ascii_name = "".join(char if char.isascii() and char.isprintable() and char not in '"\\' else "_" for char in name)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"
