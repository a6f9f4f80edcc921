"""`python -m app.tasks.celery_worker`: a Celery worker for TASK_BACKEND=celery, on any machine that shares
UPLOAD_DIR (or reaches the bucket of STORAGE_URL) and reaches REDIS_URL.

It runs MAX_CONCURRENT_TASKS pool processes (or `--concurrency N`); each loads the models
once and keeps them. Further arguments go to `celery worker`. The same worker starts with
`celery -A app.tasks.celery_worker worker`.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from celery.signals import worker_process_init

from app.config import Settings
from app.ops.preflight import log_preflight
from app.ops.telemetry import disable_telemetry
from app.pipeline.whisperx_pipeline import whisperx_pipeline
from app.tasks.celery_app import TASK_NAME, make_celery
from app.tasks.remote import RemoteRunner

settings = Settings()
celery = make_celery(settings)
_runner: RemoteRunner | None = None


@worker_process_init.connect
def _load_models(**_: Any) -> None:
    # In each pool process after it starts: the parent never loads torch, so CUDA starts clean here.
    global _runner
    _runner = RemoteRunner(settings, whisperx_pipeline)


@celery.task(name=TASK_NAME)
def transcribe(task_id: str) -> None:
    if _runner is None:
        raise RuntimeError("worker_process_init did not run: start workers with the prefork pool")
    _runner.run(task_id)


def main() -> None:
    disable_telemetry()
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    log_preflight(settings)
    celery.worker_main(
        [
            "worker",
            f"--concurrency={settings.max_concurrent_tasks}",
            f"--loglevel={settings.log_level.upper()}",
            "--pool=prefork",
            # Hand a task to a process that is free, never queue it behind a long one.
            "-O",
            "fair",
            "--without-gossip",
            # Unique per process, so several workers may share a host.
            f"--hostname=whisperx-{os.getpid()}@%h",
            *sys.argv[1:],
        ]
    )


if __name__ == "__main__":
    main()
