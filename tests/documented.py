"""The code blocks of the README and the docs pages, found by the heading above them.

Tests that run documented examples read them from here, so an example runs as the page shows it.
"""

from __future__ import annotations

import re

from tests.conftest import ROOT

_FENCE = re.compile(r"^(```+|~~~+)")
_HEADING = re.compile(r"^(#{1,6}) (.*?)\s*$")


def section(page: str, heading: str, port: int = 8000) -> str:
    """The text under `heading` in `page` (a path from the repository root) up to the next heading of
    its level or above. `localhost:8000` becomes `localhost:<port>`, where the test server listens."""
    lines = (ROOT / page).read_text().replace("localhost:8000", f"localhost:{port}").splitlines(keepends=True)
    level, body, fence = 0, [], ""
    for line in lines:
        opens = _FENCE.match(line)
        if opens and not fence:
            fence = opens.group(1)
        elif fence and line.startswith(fence):
            fence = ""
        elif not fence and (found := _HEADING.match(line)):
            if level and len(found.group(1)) <= level:
                break
            if not level and found.group(2) == heading:
                level = len(found.group(1))
                continue
        if level:
            body.append(line)
    assert level, f"{page} has no heading '{heading}'"
    return "".join(body)


def code_blocks(page: str, heading: str, port: int = 8000) -> list[str]:
    """The fenced code blocks of a section, in order, without their fences."""
    return re.findall(r"^```\w*\n(.*?)^```", section(page, heading, port), re.MULTILINE | re.DOTALL)
