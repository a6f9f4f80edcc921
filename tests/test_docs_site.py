"""The docs site builds with `mkdocs build --strict`: a dead link, a missing anchor or a page left
out of the nav fails it (mkdocs.yml's `validation`). The README's links into docs/ hold too."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from markdown.extensions.toc import slugify

from tests.conftest import ROOT


def test_site_builds_strictly(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "site" / "configuration" / "index.html").is_file()


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)
    return {slugify(heading, "-") for heading in re.findall(r"^#{1,6} (.+?)\s*$", text, re.MULTILINE)}


README_LINKS = re.findall(r"\]\(((?:docs/|LICENSE)[^)#]*)(?:#([^)]*))?\)", (ROOT / "README.md").read_text())


@pytest.mark.parametrize(("target", "anchor"), README_LINKS, ids=[f"{t}#{a}" for t, a in README_LINKS])
def test_readme_link_resolves(target: str, anchor: str) -> None:
    assert (ROOT / target).exists(), f"README links to {target}, which does not exist"
    if anchor:
        assert anchor in _anchors(ROOT / target), f"{target} has no heading for #{anchor}"


# Environment variables the docs name besides the service's settings (app/config.py).
OTHER_VARIABLES = {
    "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "PYANNOTE_METRICS_ENABLED", "TORCH_HOME",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_REGION",  # the AWS credential chain
}  # fmt: skip


def _prose(text: str) -> str:
    """A page without its code blocks, code spans, comments and link targets: the words people read."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)
    text = re.sub(r"`[^`]*`", "", text)
    return re.sub(r"\]\([^)]*\)", "]", text)


@pytest.mark.parametrize(
    "page", [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))], ids=lambda page: page.name
)
def test_no_placeholder_is_left_in_the_docs(page: Path) -> None:
    """A bare UPPER_SNAKE word in prose is a setting's name, or a placeholder never filled in
    (`BENCH_FIGURES`); TODO and its kin are never meant for readers."""
    from app.config import Settings

    known = {name.upper() for name in Settings.model_fields} | OTHER_VARIABLES
    words = re.findall(r"\b(?:[A-Z][A-Z0-9]*_[A-Z0-9_]+|TODO|TBD|FIXME|XXX)\b", _prose(page.read_text()))
    assert [word for word in words if word not in known] == []
