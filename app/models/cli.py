"""`python -m app.models list | pull NAME...` (also `whisperx-api-models`): what the service can load, and
fetching it ahead of time, into MODEL_CACHE_DIR, for a first start without waiting or an air-gapped host.

Names: Whisper sizes (`base`, `large-v2`, …) and CTranslate2 repo ids (`Systran/faster-whisper-large-v3`),
`align:LANG` (the wav2vec2 aligner whisperX uses for a language, with NLTK's sentence splitter), and
`diarization` (pyannote's pipeline, DIARIZATION_MODEL; needs HF_TOKEN and its accepted terms).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

from tqdm.auto import tqdm

from app.config import Settings
from app.models.hub import (
    ModelUnavailable,
    align_model_name,
    cache_subdir,
    cached_snapshot,
    cached_whisper,
    fetch_aligner,
    fetch_diarization,
    fetch_punkt,
    fetch_whisper,
    torchaudio_checkpoint,
    whisper_repo,
)
from app.pipeline.models import EMBEDDED_MODELS, embedded_whisper_model


def whisper_sizes() -> list[str]:
    from faster_whisper.utils import _MODELS  # faster-whisper's own table of sizes

    return list(_MODELS)


def align_languages() -> list[str]:
    from whisperx.alignment import DEFAULT_ALIGN_MODELS_HF, DEFAULT_ALIGN_MODELS_TORCH

    return sorted({*DEFAULT_ALIGN_MODELS_TORCH, *DEFAULT_ALIGN_MODELS_HF})


def disk_size(path: Path) -> int:
    """Bytes a model takes: the files a snapshot's links point to, or a folder's files."""
    files = [path] if path.is_file() else [item for item in path.rglob("*") if item.is_file()]
    return sum(item.resolve().stat().st_size for item in files)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def whisper_location(name: str, settings: Settings) -> tuple[str, Path | None]:
    """`embedded`, `cached` or neither (`""`), and where the files are."""
    if name in EMBEDDED_MODELS and (path := embedded_whisper_model(name, settings.model_cache_dir)) is not None:
        return "embedded", path
    path = cached_whisper(name, settings)
    return ("cached", path) if path is not None else ("", None)


def aligner_location(language: str, settings: Settings) -> tuple[str, Path | None]:
    import torch.hub

    from app.models.hub import ALIGN_FILES

    model_name = align_model_name(language, settings) or ""
    checkpoint = torchaudio_checkpoint(model_name)
    if checkpoint is None:
        path = cached_snapshot(model_name, cache_subdir(settings, "align"), ALIGN_FILES, ["config.json"])
        return ("cached", path) if path is not None else ("", None)
    for folder in (cache_subdir(settings, "align"), Path(torch.hub.get_dir()) / "checkpoints"):
        if (folder / checkpoint).is_file():
            return "cached", folder / checkpoint
    return "", None


def rows(settings: Settings) -> Iterator[tuple[str, str, str, str]]:
    """Name, where it is, its size on disk, and what it is."""
    missing = "downloadable" if settings.downloads_allowed else "missing (offline)"
    names = dict.fromkeys([*whisper_sizes(), *settings.whisper_model_list])
    for name in names:
        if Path(name).is_dir():
            yield name, "local", _human(disk_size(Path(name))), "Whisper (directory)"
            continue
        try:
            state, path = whisper_location(name, settings)
        except ModelUnavailable:
            yield name, "unknown name", "-", "Whisper (not a size faster-whisper knows, nor a repo id)"
            continue
        yield name, state or missing, _human(disk_size(path)) if path else "-", f"Whisper ({whisper_repo(name)})"
    for language in align_languages():
        if not settings.aligns(language):
            yield f"align:{language}", "not offered (ALIGN_LANGUAGES)", "-", "aligner (Whisper times the words)"
            continue
        state, path = aligner_location(language, settings)
        yield (
            f"align:{language}", state or missing, _human(disk_size(path)) if path else "-",
            f"aligner ({align_model_name(language, settings)})",
        )  # fmt: skip
    path = cached_snapshot(settings.diarization_model, cache_subdir(settings, "diarization"), None, ["config.yaml"])
    state = "cached" if path else missing if settings.hf_token else "needs HF_TOKEN"
    yield "diarization", state, _human(disk_size(path)) if path else "-", f"pyannote ({settings.diarization_model})"


def list_models(settings: Settings) -> None:
    print(f"Model cache: {settings.model_cache_dir}")
    table = list(rows(settings))
    widths = [max(len(row[column]) for row in table) for column in range(3)]
    for name, state, size, what in table:
        print(f"{name:<{widths[0]}}  {state:<{widths[1]}}  {size:>{widths[2]}}  {what}")


def pull(name: str, settings: Settings) -> Path:
    """Fetch one model into the cache (no-op when it is there); where it is."""
    if name == "diarization":
        if settings.hf_token is None:
            raise ModelUnavailable("diarization: set HF_TOKEN (pyannote's models are gated; accept their terms first)")
        return fetch_diarization(settings, tqdm_class=tqdm)
    if name.startswith("align:"):
        language = name.removeprefix("align:")
        if not settings.aligns(language):
            raise ModelUnavailable(f"ALIGN_LANGUAGES leaves {language} out, so its aligner would not be used")
        aligner = fetch_aligner(language, settings, tqdm_class=tqdm)
        if aligner is None:
            raise ModelUnavailable(f"{name}: whisperX has no alignment model for {language!r}; set ALIGN_MODEL")
        if not fetch_punkt(language, settings):
            print(f"{name}: NLTK's punkt sentence splitter could not be fetched; an untrained one will be used")
        return Path(aligner.model_dir or aligner.model_name)
    if (path := embedded_whisper_model(name, settings.model_cache_dir)) is not None:
        return path
    return fetch_whisper(name, settings, tqdm_class=tqdm)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.models", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="known models: embedded, cached or downloadable, and their size on disk")
    pull_parser = commands.add_parser("pull", help="download models into MODEL_CACHE_DIR")
    pull_parser.add_argument(
        "names", nargs="+", metavar="NAME", help="base, large-v2, a repo id, align:en, diarization"
    )
    args = parser.parse_args(argv)
    settings = Settings()
    if args.command == "list":
        list_models(settings)
        return
    if not settings.downloads_allowed:
        parser.exit(2, "Downloads are off (OFFLINE=true or HF_HUB_OFFLINE=1): unset them to pull models.\n")
    failed = False
    for name in args.names:
        try:
            path = pull(name, settings)
        except ModelUnavailable as error:
            print(f"{name}: {error} (MODEL_CACHE_DIR={settings.model_cache_dir})", file=sys.stderr)
            failed = True
        else:
            print(f"{name}: {path} ({_human(disk_size(path))})")
    if failed:
        sys.exit(1)
