"""Telemetry of the bundled libraries, off: a self-hosted service sends nothing home.

Each library reads its switch when it is imported, so these run before any of them is: when
the app is built, and first thing in every worker process.
"""

from __future__ import annotations

import os

SWITCHES = {
    "HF_HUB_DISABLE_TELEMETRY": "1",  # huggingface_hub (faster-whisper, transformers)
    "PYANNOTE_METRICS_ENABLED": "false",  # pyannote.audio's usage metrics
}


def disable_telemetry() -> None:
    os.environ.update(SWITCHES)


def disable_onnxruntime_telemetry() -> None:
    """onnxruntime (pyannote's speaker embeddings, Silero VAD) has a call, not an environment switch."""
    import onnxruntime

    onnxruntime.disable_telemetry_events()
