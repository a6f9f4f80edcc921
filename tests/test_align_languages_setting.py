"""ALIGN_LANGUAGES: which languages' words a wav2vec2 model aligns (and so which aligners can be fetched)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.config import Settings
from app.models.cli import pull
from app.models.hub import ModelUnavailable, align_model_name


def _settings(align_languages: str | None) -> Settings:
    return Settings(_env_file=None, api_keys="key", align_languages=align_languages)  # type: ignore[call-arg]


def test_unset_aligns_every_language_and_a_list_only_its_own() -> None:
    assert _settings(None).aligns("fi")
    assert _settings(" ").aligns("fi")  # blank is unset, as in .env.example
    listed = _settings("EN, de")
    assert (listed.aligns("en"), listed.aligns("de"), listed.aligns("fi")) == (True, True, False)
    assert not _settings("none").aligns("en")


def test_an_unknown_code_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match="ALIGN_LANGUAGES holds xx: not a language code Whisper knows"):
        _settings("en,xx")


def test_a_language_left_out_has_no_aligner_and_is_not_pulled() -> None:
    settings = _settings("en")
    assert align_model_name("en", settings) == "WAV2VEC2_ASR_BASE_960H"
    assert align_model_name("fi", settings) is None
    with pytest.raises(ModelUnavailable, match="ALIGN_LANGUAGES leaves fi out"):
        pull("align:fi", settings)
