"""Cache first, then download: every model file the service needs, from the three places models come from.

- the Hugging Face hub (Whisper in CTranslate2 form, most wav2vec2 aligners, pyannote's pipelines),
  through huggingface_hub's own cache layout under MODEL_CACHE_DIR;
- torchaudio's checkpoints (whisperX's aligners for en, fr, de, es, it), from download.pytorch.org;
- NLTK's punkt sentence splitter (see app/pipeline/whisperx_pipeline.py, which falls back to an untrained one).

A model found in the cache loads without any network call. A miss downloads it when downloads are
allowed (OFFLINE and HF_HUB_OFFLINE are off); either way a model that cannot be had fails within a
few seconds, even when the hub never answers, with a message naming the pull command.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.config import Settings
from app.models.locks import download_lock

logger = logging.getLogger(__name__)

HUB_TIMEOUT_SECONDS = 3.0
"""Longest wait for the hub's first answer: an unreachable hub fails a load in about this long."""

TORCHAUDIO_MODELS_URL = "https://download.pytorch.org/torchaudio/models/"
"""Where torchaudio's pipelines download their checkpoints from (torchaudio.pipelines._wav2vec2.utils)."""

WHISPER_FILES = ["config.json", "preprocessor_config.json", "model.bin", "tokenizer.json", "vocabulary.*"]
"""What faster-whisper's own download_model fetches from a CTranslate2 repo."""

ALIGN_FILES = ["*.json", "*.txt", "model.safetensors", "pytorch_model.bin"]
"""What a transformers wav2vec2 CTC model needs: config, processor, tokenizer vocabulary and weights."""


class ModelUnavailable(Exception):
    """A model that is neither embedded nor cached, and cannot be downloaded now; the message, meant for
    the user, says how to provide it (the pipeline passes it on as its own error)."""


def pull_command(name: str) -> str:
    return f"python -m app.models pull {name}"


def unavailable(kind: str, name: str, settings: Settings, reason: str) -> ModelUnavailable:
    # The message reaches API callers, so it names the setting, not the server's path (logged here).
    logger.warning("The %s %r is not in %s and %s", kind, name, settings.model_cache_dir, reason)
    return ModelUnavailable(
        f"The {kind} {name!r} is not in the model cache (MODEL_CACHE_DIR) and {reason}. "
        f"Fetch it with `{pull_command(name)}` on a host with network access (same MODEL_CACHE_DIR), "
        "or copy a filled cache there."
    )


def cache_subdir(settings: Settings, kind: str) -> Path:
    """Each kind of model has its own folder in the cache: `whisper`, `align`, `diarization`, `nltk_data`."""
    return settings.model_cache_dir / kind


def whisper_repo(name: str) -> str:
    """The hub repo of a Whisper size (faster-whisper's own table) or a CTranslate2 repo id as given."""
    from faster_whisper.utils import _MODELS  # the sizes faster-whisper itself knows, and their repos

    if "/" in name:
        return name
    if name not in _MODELS:
        raise ModelUnavailable(
            f"Unknown Whisper model {name!r}: use a size ({', '.join(_MODELS)}), a CTranslate2 repo id "
            "such as Systran/faster-whisper-large-v3, or a local model directory."
        )
    return str(_MODELS[name])


def cached_snapshot(repo_id: str, cache_dir: Path, patterns: list[str] | None, required: list[str]) -> Path | None:
    """The repo's snapshot in the cache when it holds the required files; no network call."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = Path(
            snapshot_download(repo_id, cache_dir=str(cache_dir), allow_patterns=patterns, local_files_only=True)
        )
    except (LocalEntryNotFoundError, FileNotFoundError):
        return None
    # A snapshot folder exists as soon as its first file landed: a download cut short is a miss.
    return path if all((path / name).exists() for name in required) else None


def fetch_snapshot(
    repo_id: str, cache_dir: Path, settings: Settings, *, kind: str, name: str,
    patterns: list[str] | None = None, required: tuple[str, ...] = (), tqdm_class: Any = None,
) -> Path:  # fmt: skip
    """The repo's files from the cache, or downloaded into it when downloads are allowed: once, however
    many ask at a time (the others wait, then find it cached, also while it is half written)."""
    with download_lock(cache_dir, repo_id):
        return _fetch_snapshot(
            repo_id, cache_dir, settings, kind=kind, name=name, patterns=patterns, required=required,
            tqdm_class=tqdm_class,
        )  # fmt: skip


def _fetch_snapshot(
    repo_id: str, cache_dir: Path, settings: Settings, *, kind: str, name: str,
    patterns: list[str] | None, required: tuple[str, ...], tqdm_class: Any,
) -> Path:  # fmt: skip
    if (path := cached_snapshot(repo_id, cache_dir, patterns, list(required))) is not None:
        return path
    if not settings.downloads_allowed:
        raise unavailable(kind, name, settings, "downloads are off (OFFLINE=true or HF_HUB_OFFLINE=1)")
    import requests
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.constants import ENDPOINT
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    # snapshot_download asks the hub for the file list with no timeout, and a silent hub would hold
    # the load forever: ask first, with one.
    try:
        HfApi(token=token).model_info(repo_id, timeout=HUB_TIMEOUT_SECONDS)
    except (requests.ConnectionError, requests.Timeout) as error:
        logger.debug("The hub did not answer for %s: %s", repo_id, error)  # unavailable() logs the warning
        raise unavailable(
            kind, name, settings, f"the model hub ({ENDPOINT}) did not answer within {HUB_TIMEOUT_SECONDS:g} s"
        ) from None
    except RepositoryNotFoundError:
        raise unavailable(
            kind, name, settings, f"the model hub has no repo {repo_id!r} (or HF_TOKEN may not read it)"
        ) from None
    except HfHubHTTPError as error:
        raise unavailable(kind, name, settings, f"the model hub refused it ({error})") from None
    logger.info("Downloading %s into %s", repo_id, cache_dir)
    return Path(
        snapshot_download(
            repo_id, cache_dir=str(cache_dir), allow_patterns=patterns, token=token,
            etag_timeout=HUB_TIMEOUT_SECONDS, tqdm_class=tqdm_class,
        )
    )  # fmt: skip


def cached_whisper(name: str, settings: Settings) -> Path | None:
    """The Whisper model's folder when the cache holds it; no network call."""
    return cached_snapshot(whisper_repo(name), cache_subdir(settings, "whisper"), WHISPER_FILES, ["model.bin"])


def fetch_whisper(name: str, settings: Settings, tqdm_class: Any = None) -> Path:
    return fetch_snapshot(
        whisper_repo(name), cache_subdir(settings, "whisper"), settings, kind="Whisper model", name=name,
        patterns=WHISPER_FILES, required=("model.bin", "config.json"), tqdm_class=tqdm_class,
    )  # fmt: skip


@dataclass(frozen=True)
class Aligner:
    """What whisperx.load_align_model is given: a torchaudio pipeline name and the folder of its
    checkpoint, or a local transformers model directory (model_dir None)."""

    model_name: str
    model_dir: str | None


def align_model_name(language: str, settings: Settings) -> str | None:
    """The aligner for a language: ALIGN_MODEL, else whisperX's default; None when whisperX has none,
    or ALIGN_LANGUAGES leaves the language out (then nothing is fetched for it)."""
    if not settings.aligns(language):
        return None
    from whisperx.alignment import DEFAULT_ALIGN_MODELS_HF, DEFAULT_ALIGN_MODELS_TORCH

    return settings.align_model or DEFAULT_ALIGN_MODELS_TORCH.get(language) or DEFAULT_ALIGN_MODELS_HF.get(language)


def torchaudio_checkpoint(model_name: str) -> str | None:
    """The checkpoint's file name of a torchaudio pipeline; None when the name is not one."""
    import torchaudio  # type: ignore[import-untyped]

    if model_name not in torchaudio.pipelines.__all__:
        return None
    # `_path` is the bundle's checkpoint name; private, so read with care.
    checkpoint = getattr(getattr(torchaudio.pipelines, model_name), "_path", None)
    return Path(checkpoint).name if isinstance(checkpoint, str) else None


def fetch_aligner(language: str, settings: Settings, tqdm_class: Any = None) -> Aligner | None:
    """The language's aligner from the cache (or downloaded); None when whisperX has none for it."""
    model_name = align_model_name(language, settings)
    if model_name is None:
        return None
    if Path(model_name).is_dir():
        return Aligner(model_name, None)
    name = f"align:{language}"
    checkpoint = torchaudio_checkpoint(model_name)
    if checkpoint is None:
        path = fetch_snapshot(
            model_name, cache_subdir(settings, "align"), settings, kind="alignment model", name=name,
            patterns=ALIGN_FILES, required=("config.json",), tqdm_class=tqdm_class,
        )  # fmt: skip
        return Aligner(str(path), None)
    import torch.hub

    with download_lock(cache_subdir(settings, "align"), checkpoint):  # one download, as for the hub's
        # The service's cache first, then torch's own (TORCH_HOME), where whisperX alone would have put it.
        for folder in (cache_subdir(settings, "align"), Path(torch.hub.get_dir()) / "checkpoints"):
            if (folder / checkpoint).is_file():
                return Aligner(model_name, str(folder))
        if not settings.downloads_allowed:
            raise unavailable("alignment model", name, settings, "downloads are off (OFFLINE=true or HF_HUB_OFFLINE=1)")
        target = cache_subdir(settings, "align") / checkpoint
        download_file(TORCHAUDIO_MODELS_URL + checkpoint, target, kind="alignment model", name=name,
                      settings=settings, tqdm_class=tqdm_class)  # fmt: skip
    return Aligner(model_name, str(target.parent))


def download_file(url: str, target: Path, *, kind: str, name: str, settings: Settings, tqdm_class: Any) -> None:
    """One file over HTTPS into the cache, with a timeout (torch.hub's own download has none).

    Written under a name of its own (several workers may fetch the same file at once) and moved into
    place whole, so a cut download never looks cached and one download never writes into another's."""
    import httpx

    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    partial = Path(partial_name)
    try:
        with (
            os.fdopen(handle, "wb") as out,
            httpx.stream("GET", url, timeout=HUB_TIMEOUT_SECONDS, follow_redirects=True) as response,
        ):
            response.raise_for_status()
            total = int(response.headers.get("content-length", 0)) or None
            bar = tqdm_class(total=total, unit="B", unit_scale=True, desc=target.name) if tqdm_class else None
            for chunk in response.iter_bytes(1 << 20):
                out.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            if bar is not None:
                bar.close()
        partial.chmod(0o644)  # as a download by any other means would be (mkstemp makes it private)
        partial.replace(target)  # whole or not at all; a copy another worker finished first is the same file
    except httpx.HTTPError as error:
        raise unavailable(kind, name, settings, f"{url} could not be fetched ({error})") from None
    finally:
        partial.unlink(missing_ok=True)


def diarization_repos(config: Path) -> list[str]:
    """Hub repos a pyannote pipeline's config.yaml names (its segmentation and embedding models)."""
    import yaml  # type: ignore[import-untyped]

    params = (yaml.safe_load(config.read_text()) or {}).get("pipeline", {}).get("params", {})
    return [
        value for value in params.values()
        if isinstance(value, str) and re.fullmatch(r"[\w.-]+/[\w.-]+", value) and not value.startswith("$")
    ]  # fmt: skip


def fetch_diarization(settings: Settings, tqdm_class: Any = None) -> Path:
    """pyannote's pipeline and the models it names, from the cache or downloaded (HF_TOKEN reads them)."""
    repo = settings.diarization_model
    cache_dir = cache_subdir(settings, "diarization")
    pipeline = fetch_snapshot(
        repo, cache_dir, settings, kind="diarization model", name="diarization",
        required=("config.yaml",), tqdm_class=tqdm_class,
    )  # fmt: skip
    for sub_repo in diarization_repos(pipeline / "config.yaml"):
        fetch_snapshot(sub_repo, cache_dir, settings, kind="diarization model", name="diarization",
                       tqdm_class=tqdm_class)  # fmt: skip
    return pipeline


def fetch_punkt(language: str, settings: Settings) -> bool:
    """NLTK's punkt sentence splitter for whisperX's alignment, cached or downloaded; False when neither."""
    import nltk
    from whisperx.alignment import PUNKT_LANGUAGES

    punkt = f"tokenizers/punkt_tab/{PUNKT_LANGUAGES.get(language, 'english')}/"
    nltk_data = str(cache_subdir(settings, "nltk_data"))
    if nltk_data not in nltk.data.path:
        nltk.data.path.append(nltk_data)
    try:
        nltk.data.find(punkt, paths=[path for path in nltk.data.path if path != str(untrained_punkt_dir(settings))])
        return True
    except LookupError:
        pass
    if not settings.downloads_allowed:
        return False
    # NLTK's downloader opens its URLs with no timeout.
    with socket_timeout(HUB_TIMEOUT_SECONDS):
        return bool(nltk.download("punkt_tab", download_dir=nltk_data, quiet=True, raise_on_error=False))


def untrained_punkt_dir(settings: Settings) -> Path:
    """Where an untrained punkt model is written when the trained one cannot be had; kept apart from
    `nltk_data`, so it never passes for the real one."""
    return cache_subdir(settings, "nltk_untrained")


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Within: huggingface_hub makes no request and answers from its cache (used while loading a model
    that is cached, so a slow or absent hub costs nothing)."""
    from huggingface_hub import configure_http_backend
    from huggingface_hub.utils._http import OfflineAdapter, _default_backend_factory

    def offline_session() -> Any:
        import requests

        session = requests.Session()
        session.mount("http://", OfflineAdapter())
        session.mount("https://", OfflineAdapter())
        return session

    configure_http_backend(offline_session)
    try:
        yield
    finally:
        configure_http_backend(_default_backend_factory)


@contextlib.contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """Within: sockets opened without a timeout (urllib's, as NLTK's downloader uses) get one."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)
