from __future__ import annotations

import contextlib
import logging
import time

from celery import shared_task
from django.db import OperationalError, connection

from inference import executor, services
from inference.models import FinishReason
from inference.outcome import JobOutcome
from inference.worker import worker_name

logger = logging.getLogger(__name__)

FINISH_RETRIES = 5


CLAIM_RETRY_SECONDS = (1, 2, 4, 8, 15, 30)


def _drop_connection() -> None:
    """After a database error this thread's connection may be dead (a restarted server): close it,
    so the next try takes a fresh one instead of failing on the same broken socket."""
    with contextlib.suppress(Exception):  # closing a dead connection may fail too; the next query reconnects
        connection.close()


def _claim(job_id: str):
    """Claim the job, waiting out a database that blinks (a restart takes seconds): a claim that
    fails for good acknowledges the message with the job still queued, and only the sweeper's
    slow resend would then run it."""
    for pause in CLAIM_RETRY_SECONDS:
        try:
            return services.job_claim(job_id=job_id, worker=worker_name())
        except OperationalError:
            logger.warning("claiming job %s failed; trying again in %d s", job_id, pause, exc_info=True)
            _drop_connection()
            time.sleep(pause)
    return services.job_claim(job_id=job_id, worker=worker_name())


@shared_task(name=services.RUN_GENERATION_TASK, ignore_result=True, acks_late=True)
def run_generation(job_id: str) -> None:
    """Claim the job (a duplicate or late delivery claims nothing and stops here), run it on this
    process's engine, record how it ended."""
    job = _claim(job_id)
    if job is None:
        return
    try:
        outcome = executor.execute(job)
    except Exception:
        logger.exception("job %s failed", job_id)
        outcome = JobOutcome(
            text="",
            completion_tokens=0,
            finish_reason=FinishReason.ERROR,
            error="The job failed on the server before producing any text. Your quota was not charged; "
            "please try again.",
        )
    # The database may blink; the generated text is worth a few retries. If they all fail, the
    # sweeper takes the job back once it is overdue.
    for attempt in range(FINISH_RETRIES):
        try:
            services.job_finish(job=job, outcome=outcome)
            return
        except OperationalError:
            logger.warning("recording job %s failed (attempt %d)", job_id, attempt + 1, exc_info=True)
            _drop_connection()
            time.sleep(2**attempt)
        except Exception:
            # Not transient (the text itself was refused): record the end without the text, so the
            # job ends now. What was streamed was delivered, so it is charged all the same.
            logger.exception("recording job %s failed; recording it without its text", job_id)
            services.job_finish(
                job=job,
                outcome=JobOutcome(
                    text="",
                    completion_tokens=outcome.completion_tokens,
                    finish_reason=FinishReason.ERROR,
                    error="The job's text could not be saved. What was streamed to you is charged; please try again.",
                ),
            )
            return
    logger.error("could not record the end of job %s", job_id)


@shared_task(name="inference.sweep_jobs", ignore_result=True)
def sweep_jobs() -> str:
    report = services.jobs_sweep()
    if report.requeued or report.failed or report.cancelled or report.resent:
        logger.info("sweep: %s", report)
    return str(report)


@shared_task(name="inference.erase_expired_texts", ignore_result=True)
def erase_expired_texts() -> int:
    erased = services.job_texts_erase_expired()
    if erased:
        logger.info("retention: erased the texts of %d jobs", erased)
    return erased
