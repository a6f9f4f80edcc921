"""Service settings, read from the environment and an optional `.env` file."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from tempfile import gettempdir
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

from app.keys import ApiKey, parse_api_keys

MIN_WEBHOOK_SECRET_BYTES = 16
"""128 bits: too many to try offline from a signature or a key's derived secret."""
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "whisperx-api"


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "whisperx-api"


def _codes(value: str) -> list[str]:
    return [code.strip().lower() for code in value.split(",") if code.strip()]


class Settings(BaseSettings):
    """Every setting is an environment variable of the same name in upper case."""

    # Attribute docstrings become field descriptions: docs/configuration.md is generated from them.
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        use_attribute_docstrings=True,
        # A validation error must not print the value it refused: it may be a key or a token.
        hide_input_in_errors=True,
    )

    # The seed's settings.
    api_keys: SecretStr | None = None
    """Comma-separated API keys accepted in `X-API-Key`, each `id:key` or a bare `key`. Tasks belong to the id,
    so a key can be replaced under the same id; a bare key's id is a hash of the key.
    Unset: a key is generated and printed once."""

    hf_token: SecretStr | None = None
    """HuggingFace token for the gated pyannote diarization model."""

    whisper_model: str | None = None
    """Model name or CTranslate2 directory. Unset: `large-v2` on CUDA, the embedded `base` on CPU."""

    compute_type: Literal["float16", "float32", "int8", "int8_float16", "int8_float32", "default"] = "float16"
    """CTranslate2 precision. `float16` falls back to `int8` on a CPU."""

    batch_size: int | None = Field(None, ge=1, le=256)
    """30-s chunks transcribed per batch; lower it when the GPU runs out of memory. Unset: 16 on CUDA,
    2 on a CPU, where each chunk in a batch holds about 100 MB: 4 is ~15 % faster and peaks ~280 MB higher."""

    max_concurrent_tasks: int = Field(2, ge=1, le=32)
    """Tasks transcribed at once; each has its own worker process holding the models. On a CPU, two
    workers with a core each beat one with both: on a shared 2-core machine with `base` they moved
    5.5 times the audio per second for 1.6 times the memory (1.9 GB PSS against 1.2 GB;
    bench/concurrency.py). One worker with CPU_THREADS=1 matched them at 1.0 GB."""

    # Extras, beyond the seed.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where inference runs. `auto` picks CUDA when torch sees a GPU."""

    cpu_threads: int = Field(0, ge=0)
    """CPU threads per worker. 0 shares the machine's cores among the workers."""

    beam_size: int | None = Field(None, ge=1, le=16)
    """Beam width when decoding. Unset: 5 on CUDA; 2 on a CPU, which gave the same words as 5 on the
    bench's clips in less time, where greedy decoding (1) missed words on telephone speech."""

    align_model: str | None = None
    """wav2vec2 alignment model (hub id or local directory). Unset: whisperX's default for the language."""

    align_languages: str | None = None
    """Comma-separated languages (Whisper's codes: `en,de,fi`) whose words are aligned by a wav2vec2
    model, or `none`. Any language a request names can make a worker download its aligner (about
    0.4 GB for `en`, `fr`, `de`, `es`, `it`; 1.3 GB for most others; see docs/models.md): listing
    the languages, pulled ahead with `python -m app.models pull align:LANG`, caps what requests can
    fetch. Others get Whisper's word times and a note. Unset: every language whisperX has an aligner for."""

    diarization_model: str = "pyannote/speaker-diarization-3.1"
    """pyannote pipeline used for speaker labels when HF_TOKEN is set."""

    model_cache_dir: Path = Field(default_factory=_default_cache_dir)
    """Where embedded models are assembled and downloaded models are cached (`python -m app.models list`).
    Unset: `whisperx-api` in `$XDG_CACHE_HOME`, or in `~/.cache`."""

    offline: bool = False
    """Never download a model: only embedded and cached ones load (so does the hub's own HF_HUB_OFFLINE=1).
    Off: a model missing from MODEL_CACHE_DIR is downloaded on first use."""

    whisper_models: str | None = None
    """Comma-separated Whisper models a request may choose with its `model` field (sizes such as
    `tiny.en`, `base`, `large-v3`, or CTranslate2 repo ids). Unset: the default model alone."""

    max_loaded_models: int = Field(1, ge=1, le=16)
    """Whisper models each worker keeps loaded at once. Loading another unloads the least recently used,
    the default last (with 1, a chosen model takes the default's place until the next task needs it;
    2 keeps the default loaded beside one chosen model); one whose files cannot be had unloads nothing."""

    model_idle_seconds: float = Field(300.0, gt=0)
    """A Whisper model other than the default is unloaded after this long unused."""

    upload_dir: Path = Field(default_factory=lambda: Path(gettempdir()) / "whisperx-api-uploads")
    """Where uploads wait, under server-chosen names, until their task ends.
    Unset: `whisperx-api-uploads` in the system's temporary directory (`$TMPDIR`, usually `/tmp`)."""

    orphan_upload_grace_hours: float = Field(1.0, ge=0)
    """At start, files in UPLOAD_DIR that no task refers to and that are older than this are deleted
    (left by a crash). Keep it above the longest upload when several processes share UPLOAD_DIR.
    With STORAGE_URL, the bucket is swept the same way at start and then every quarter of this
    (at most hourly): unfinished multipart uploads are aborted, objects no live task refers to removed."""

    storage_url: str | None = None
    """Where uploads wait for their worker: `s3://bucket/prefix` for an S3-compatible bucket, so API
    processes and workers share no filesystem (TASK_BACKEND=celery). Credentials come from the
    standard AWS chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, a role), never from
    here. Unset: UPLOAD_DIR alone (one machine, or a filesystem every machine mounts)."""

    s3_endpoint_url: str | None = None
    """The S3 API's address for services other than AWS (MinIO, Ceph, R2, Google Cloud Storage), such
    as `http://minio:9000`. Unset: AWS, in the region of AWS_REGION or the AWS config."""

    cancel_grace_seconds: float = Field(1.0, gt=0)
    """How long a deleted running task may take to stop at its next progress step before its worker
    process is killed (one transcription step can take several seconds on a CPU)."""

    standby_workers: int | None = Field(None, ge=0, le=8)
    """Loaded, idle worker processes that take over at once from a worker killed in the middle of a
    task (deleted and not stopped within CANCEL_GRACE_SECONDS, past STAGE_TIMEOUT_SECONDS, crashed),
    so the next task need not wait ~10 s for a fresh worker to load the models. Each costs memory (about
    0.6 GB more on a CPU with the default model; on a GPU, its own copy of the models in GPU memory);
    with 0 a killed worker is restarted in place. Unset: 1 when the workers run on the CPU, 0 on CUDA
    (a GPU's steps are short enough to stop within the grace, and its memory is scarcer).
    TASK_BACKEND=local only."""

    ffmpeg_timeout_seconds: float = Field(600.0, gt=0)
    """Longest an ffprobe or ffmpeg call may run."""

    # Limits: what one request, one key and the whole queue may take.
    max_upload_mb: float = Field(500.0, gt=0)
    """Largest upload, in MiB; a bigger body is refused with 413 before it is stored."""

    max_audio_seconds: float = Field(14400.0, gt=0)
    """Longest audio accepted, in seconds (probed before queueing; longer is refused with 413)."""

    max_queue_size: int = Field(100, ge=1)
    """Most tasks waiting for a worker; beyond it uploads get 503 with Retry-After."""

    max_body_kb: float = Field(64.0, gt=0)
    """Largest request body, in KiB, on every route that takes no audio file: JSON (a speaker rename) and
    forms of short fields. A bigger body is refused with 413 before it is read, let alone parsed."""

    # Per-key caps: what one API key may hold at once, so that one key cannot crowd out the others.
    # Refused with 429 and a message naming the setting; streams, enrolments and uploads are counted
    # per API process, stored tasks across all of them.
    max_tasks_per_key: int = Field(20, ge=1)
    """Most pending or processing tasks one API key may have; beyond it uploads get 429."""

    max_stored_tasks_per_key: int = Field(5000, ge=1)
    """Most tasks one API key may have stored in any state, failed and completed ones included (they are
    kept TASK_TTL_HOURS); beyond it new tasks get 429 until some are deleted or expire."""

    max_uploads_per_key: int = Field(4, ge=1)
    """Most uploads one API key may be sending at once; beyond it, 429 before the body."""

    max_streams_per_key: int = Field(20, ge=1)
    """Most event streams (`/api/v1/transcribe/events/…`) one API key may hold open at once; beyond it, 429.
    Live sessions have their own cap, MAX_LIVE_SESSIONS_PER_KEY."""

    max_enrolments_per_key: int = Field(2, ge=1)
    """Most voice enrolments (`POST /api/v1/speakers`, `…/samples`) one API key may have in flight at once;
    beyond it, 429 before the sample is sent."""

    max_sample_seconds: float = Field(120.0, gt=0, le=3600)
    """Longest enrolment sample accepted, in seconds; longer is refused with 413 before it is embedded.
    Samples from one process are embedded one at a time, so this bounds how long one key's sample can
    hold up another key's."""

    max_live_sessions: int = Field(2, ge=0, le=64)
    """Live transcription sessions (`/v1/realtime`) open at once, all served by one live worker process
    of their own (LIVE_MODEL), so queued tasks and live speech never wait for each other. 0: no live
    sessions. The live worker starts with the first session. On 2 CPU cores see docs/live.md for capacity."""

    max_live_sessions_per_key: int = Field(1, ge=1)
    """Live sessions one API key may hold open at once (per API process); beyond it the upgrade is refused."""

    live_model: str = "tiny.en"
    """The Whisper model of the live worker: small and fast, since it transcribes each utterance as it is
    spoken (partial text about twice a second). Any name WHISPER_MODEL takes."""

    live_max_session_seconds: float = Field(3600.0, gt=0)
    """Longest a live session may last; then it gets an `error` event and is closed."""

    live_idle_timeout_seconds: float = Field(60.0, gt=0)
    """A live session whose client sends nothing for this long gets an `error` event and is closed."""

    body_min_rate_kb: float = Field(16.0, gt=0)
    """Slowest a request body may arrive on average, in KiB/s, after BODY_GRACE_SECONDS; slower gets 408."""

    body_grace_seconds: float = Field(10.0, gt=0)
    """How far a request body may fall behind BODY_MIN_RATE_KB before it is cut off (a stall at the start, say)."""

    keep_alive_seconds: int = Field(5, ge=1)
    """How long `python -m app.main` keeps an idle connection open for the client's next request."""

    max_connections: int = Field(1000, ge=1)
    """Connections and requests `python -m app.main` serves at once; beyond it, 503 at once."""

    stage_timeout_seconds: float = Field(3600.0, gt=0)
    """Longest one pipeline stage (decoding, transcribing, …) may run before its task fails."""

    task_ttl_hours: float = Field(24.0, gt=0)
    """How long completed and failed tasks (and their results) are kept; then they are gone (404)."""

    # Durability.
    task_store: Literal["memory", "sqlite"] = "memory"
    """`memory` (tasks are lost on restart) or `sqlite` (tasks survive restarts and crashes)."""

    data_dir: Path = Field(default_factory=_default_data_dir)
    """Where the service keeps its own data (the SQLite database of tasks and voices), apart from the uploads;
    made private to the service's user (0700, the database 0600). Unset: `whisperx-api` in `$XDG_DATA_HOME`,
    or in `~/.local/share`."""

    task_db_path: Path | None = None
    """SQLite file for TASK_STORE=sqlite. Unset: `tasks.db` in DATA_DIR."""

    # Distribution.
    task_backend: Literal["local", "celery"] = "local"
    """`local`: this process queues tasks and runs them on its own worker processes. `celery`: tasks,
    progress and results live in Redis and run on workers started with `python -m app.tasks.celery_worker`, on any
    machine that shares UPLOAD_DIR or reaches STORAGE_URL; API processes keep no state (TASK_STORE is then not used)."""

    redis_url: str = "redis://localhost:6379/0"
    """Redis for TASK_BACKEND=celery: the Celery broker and the task store of API processes and workers."""

    api_takeover_seconds: float = Field(30.0, ge=1.0, le=3600.0)
    """TASK_BACKEND=celery: how long what an API process held stays with it after it stopped without
    a clean shutdown (crashed, killed) before another API process takes it over: the callbacks it was
    sending and the metrics of the tasks it saw first. A live process renews its hold every third of
    this; one stalled for longer (its event loop or its Redis connection) loses its callbacks to
    another, which may then send one a second time (receivers dedupe by webhook-id)."""

    host: str = "0.0.0.0"
    """Interface `python -m app.main` listens on."""

    port: int = Field(8000, ge=1, le=65535)
    """Port `python -m app.main` listens on."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log verbosity."""

    audio_url_allow_private: bool = False
    """Allow `audio_url` downloads from loopback, private and other non-public addresses (off: they would
    let callers reach the server's own network). For test labs and services only trusted users can call."""

    audio_url_timeout_seconds: float = Field(300.0, gt=0)
    """Longest an `audio_url` download may take, start to end."""

    webhook_secret: SecretStr | None = None
    """Standard Webhooks signing secret (`whsec_` + base64, at least 16 bytes once decoded) for callbacks.
    Unset: `callback_url` is refused."""

    webhook_allow_private: bool = False
    """Allow callbacks to loopback, private and other non-public addresses (off: they would let callers
    probe the server's own network). For test labs and services only trusted users can call."""

    webhook_max_attempts: int = Field(5, ge=1, le=20)
    """Tries per callback before giving up."""

    webhook_retry_base_seconds: float = Field(1.0, gt=0)
    """Wait before the first retry; it doubles with every further retry."""

    webhook_timeout_seconds: float = Field(10.0, gt=0)
    """Longest one callback request may take."""

    @field_validator(
        "api_keys",
        "hf_token",
        "whisper_model",
        "batch_size",
        "beam_size",
        "align_model",
        "align_languages",
        "whisper_models",
        "webhook_secret",
        "storage_url",
        "s3_endpoint_url",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _keys_not_empty(self) -> Settings:
        if self.api_keys is not None and not self.api_key_entries:
            raise ValueError("API_KEYS holds no key: give one or more comma-separated keys, or unset it")
        return self

    @field_validator("storage_url")
    @classmethod
    def _storage_is_a_bucket(cls, value: str | None) -> str | None:
        if value is not None:
            parsed = urlsplit(value)
            if parsed.scheme != "s3" or not parsed.hostname or parsed.query or parsed.fragment:
                raise ValueError("STORAGE_URL must be s3://bucket or s3://bucket/prefix, or unset for UPLOAD_DIR")
            if "@" in parsed.netloc:
                raise ValueError(
                    "STORAGE_URL must not hold credentials: give them as AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, a profile or a role"
                )
        return value

    @field_validator("s3_endpoint_url")
    @classmethod
    def _endpoint_is_http(cls, value: str | None) -> str | None:
        if value is not None:
            parsed = urlsplit(value)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise ValueError("S3_ENDPOINT_URL must be an http:// or https:// address, such as http://minio:9000")
            if "@" in parsed.netloc:
                raise ValueError("S3_ENDPOINT_URL must not hold credentials: give them as AWS_ACCESS_KEY_ID and so on")
        return value

    @model_validator(mode="after")
    def _bucket_needs_celery(self) -> Settings:
        if self.storage_url is not None and self.task_backend != "celery":
            raise ValueError(
                "STORAGE_URL is for TASK_BACKEND=celery (workers on other machines); with the local "
                "backend uploads stay in UPLOAD_DIR: unset STORAGE_URL"
            )
        return self

    @field_validator("webhook_secret")
    @classmethod
    def _secret_is_base64(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                Webhook(value.get_secret_value())
            except (ValueError, EmptyWebhookSecretError):  # binascii.Error is a ValueError
                raise ValueError(
                    "WEBHOOK_SECRET must be base64, optionally prefixed with whsec_; "
                    "make one with: openssl rand -base64 32"
                ) from None
            # Keys' own secrets are derived from it: a short one could be guessed offline from any of them.
            decoded = base64.b64decode(value.get_secret_value().removeprefix(WEBHOOK_SECRET_PREFIX) + "==")
            if len(decoded) < MIN_WEBHOOK_SECRET_BYTES:
                raise ValueError(
                    f"WEBHOOK_SECRET holds {len(decoded)} bytes; it needs at least {MIN_WEBHOOK_SECRET_BYTES} "
                    "random bytes. Make one with: openssl rand -base64 32"
                )
        return value

    @field_validator("align_languages")
    @classmethod
    def _known_languages(cls, value: str | None) -> str | None:
        if value is not None and value.strip().lower() != "none":
            from whisperx.utils import LANGUAGES  # no torch: the API process imports it too

            unknown = [code for code in _codes(value) if code not in LANGUAGES]
            if unknown:
                raise ValueError(
                    f"ALIGN_LANGUAGES holds {', '.join(unknown)}: not a language code Whisper knows; "
                    "give codes such as en,de,fi, or none"
                )
        return value

    def aligns(self, language: str) -> bool:
        """Whether ALIGN_LANGUAGES lets the language's words be aligned (unset: every language's)."""
        if self.align_languages is None:
            return True
        return self.align_languages.strip().lower() != "none" and language in _codes(self.align_languages)

    @property
    def downloads_allowed(self) -> bool:
        """Whether a model missing from the cache may be downloaded (OFFLINE and HF_HUB_OFFLINE both say no)."""
        from huggingface_hub.constants import HF_HUB_OFFLINE

        return not (self.offline or HF_HUB_OFFLINE)

    @property
    def whisper_model_list(self) -> list[str]:
        """WHISPER_MODELS as a list (empty when unset)."""
        return [name.strip() for name in (self.whisper_models or "").split(",") if name.strip()]

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_kb * 1024)

    @property
    def task_db_file(self) -> Path:
        return self.task_db_path or self.data_dir / "tasks.db"

    @property
    def api_key_entries(self) -> list[ApiKey]:
        """The keys of API_KEYS with their ids (checked when the settings are read)."""
        return parse_api_keys(self.api_keys.get_secret_value()) if self.api_keys is not None else []
