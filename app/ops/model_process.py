"""What every child process that holds models does first: the task workers and the live worker."""

from __future__ import annotations

import logging
import signal
import threading

from tqdm import tqdm

from app.ops.orphans import end_with_parent
from app.ops.telemetry import disable_telemetry


def prepare_model_process(log_level: str, tag: str) -> None:
    """Tie the process to its parent, leave Ctrl+C to the parent, and set up logging as `[tag]`."""
    end_with_parent()  # never outlive the API, even one killed outright
    # The parent decides when a child stops: Ctrl+C in a terminal reaches the whole process group,
    # and must not break a child mid-call with a KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # tqdm's default lock (faster-whisper opens a progress bar, hidden, per transcription) is a
    # multiprocessing lock: a named semaphore that only multiprocessing's exit handlers remove, so a
    # killed child would leave one behind until the service stops. One process needs a thread lock.
    tqdm.set_lock(threading.RLock())
    disable_telemetry()
    logging.basicConfig(level=log_level.upper(), format=f"%(levelname)s [{tag}] %(name)s: %(message)s")
