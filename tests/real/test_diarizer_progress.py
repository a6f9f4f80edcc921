"""The embedded diarizer's progress follows its steps, so a time estimate can read its pace from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.media import decode
from app.pipeline.diarizers import EmbeddedDiarizer

REAL = Path(__file__).resolve().parent.parent / "data" / "real"


def test_progress_runs_through_segmentation_embeddings_and_resegmentation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    diarizer = EmbeddedDiarizer("cpu", tmp_path)
    reported: list[tuple[str, float]] = []
    step = ["pyannote"]
    frame_scores = diarizer.encoder.frame_scores

    def resegmenting(*args: Any, **kwargs: Any) -> Any:
        step[0] = "resegmentation"
        return frame_scores(*args, **kwargs)

    monkeypatch.setattr(diarizer.encoder, "frame_scores", resegmenting)
    # A real two-person excerpt: the resegmentation runs only where there is more than one voice.
    audio = decode(REAL / "ami-debug-dev01.opus", timeout=60, max_seconds=600)
    diarizer(audio, progress_callback=lambda percent: reported.append((step[0], percent)))

    percents = [percent for _, percent in reported]
    assert percents == sorted(percents)
    before = [percent for name, percent in reported if name == "pyannote"]
    during = [percent for name, percent in reported if name == "resegmentation"]
    # pyannote's two steps end at 80 %, not at 99 % with a fifth of the stage's time still to run.
    assert before[-1] == pytest.approx(80.0)
    assert during
    assert all(80.0 < percent <= 100.0 for percent in during)
    assert percents[-1] == 100.0
