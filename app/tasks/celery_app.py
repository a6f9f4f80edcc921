"""The Celery application of TASK_BACKEND=celery, as API processes and workers both configure it.

Celery carries only task ids: the job, progress and result live in the Redis task store,
so a message never holds a transcript and a new Job field needs nothing here.
"""

from __future__ import annotations

from celery import Celery

from app.config import Settings

TASK_NAME = "whisperx.transcribe"
QUEUE = "transcription"

VISIBILITY_TIMEOUT_SECONDS = 6 * 3600
"""When Redis hands an unacknowledged message to another worker. Dead workers are found sooner by
their lapsed leases (app/tasks/coordination.py); this is the broker's own last resort, long enough
that a long file still running is not handed out again (and its lease would stop it running twice)."""


def make_celery(settings: Settings) -> Celery:
    app = Celery("whisperx", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        # Results go to the task store, not Celery's result backend.
        task_ignore_result=True,
        # Acknowledge after the run, and requeue when the process running it dies: a retry, not a loss.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One task per process at a time; a waiting task stays in Redis for whichever worker is free.
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_SECONDS},
        broker_connection_retry_on_startup=True,
        # A pool process is up only once its models are loaded, which takes far longer than Celery's 4 s.
        worker_proc_alive_timeout=900,
        worker_hijack_root_logger=False,
    )
    return app
