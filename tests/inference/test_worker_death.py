"""A worker killed mid-job (SIGKILL, OOM) never leaves the job running forever nor charges it twice."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.workspaces import membership_personal
from billing.models import QuotaPeriod, UsageRecord
from inference.models import GenerationJob, JobStatus, Worker
from inference.services import job_claim, job_submit, jobs_sweep
from tests.inference.helpers import wait_until_final, wait_until_streaming
from tests.support import start_worker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)
STALE = 2


@pytest.fixture(autouse=True)
def quick_staleness(settings):
    settings.WORKER_STALE_SECONDS = STALE
    settings.JOB_MAX_ATTEMPTS = 3


def _kill_while_running(job, log_dir, name: str, attempt: int) -> None:
    worker = start_worker(log_dir, name=name)
    try:
        wait_until(
            lambda: type(job).objects.filter(pk=job.pk, status=JobStatus.RUNNING, attempts=attempt).exists(),
            timeout=60,
            what=f"attempt {attempt} to start",
            process=worker.process,
        )
        wait_until_streaming(job)
        os.kill(worker.pid, signal.SIGKILL)
        worker.process.wait()
    finally:
        worker.stop()
    time.sleep(STALE + 0.5)  # its heartbeat goes stale


def _finish_on_a_new_worker(job, log_dir, name: str):
    worker = start_worker(log_dir, name=name)
    try:
        return wait_until_final(job)
    finally:
        worker.stop()


def test_a_job_whose_worker_is_killed_is_requeued_and_charged_once(subscriber, artifacts_dir):
    job = job_submit(
        member=membership_personal(subscriber), prompt="Once upon a time", max_new_tokens=1000, temperature=0
    )
    _kill_while_running(job, artifacts_dir / "logs", "doomed", attempt=1)

    report = jobs_sweep()

    assert str(job.pk) in report.requeued
    job.refresh_from_db()
    assert (job.status, job.attempts, job.worker) == (JobStatus.QUEUED, 1, "")
    assert QuotaPeriod.objects.get(workspace__personal_of=subscriber).used == 0
    job = _finish_on_a_new_worker(job, artifacts_dir / "logs", "rescuer")
    assert job.status == JobStatus.SUCCEEDED
    assert job.attempts == 2
    period = QuotaPeriod.objects.get(workspace__personal_of=subscriber)
    assert (period.reserved, period.used) == (0, job.prompt_tokens + job.completion_tokens)
    assert UsageRecord.objects.filter(job=job).count() == 1
    assert jobs_sweep().requeued == []  # nothing left to take back


def test_a_job_that_kills_its_worker_every_time_fails_after_the_last_attempt(subscriber, artifacts_dir):
    job = job_submit(
        member=membership_personal(subscriber), prompt="Once upon a time", max_new_tokens=1000, temperature=0
    )
    for attempt in (1, 2, 3):
        _kill_while_running(job, artifacts_dir / "logs", f"doomed{attempt}", attempt=attempt)
        report = jobs_sweep()
        if attempt < 3:
            assert str(job.pk) in report.requeued

    assert str(job.pk) in report.failed
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.attempts == 3
    assert "stopped its worker 3 times" in job.error_message
    period = QuotaPeriod.objects.get(workspace__personal_of=subscriber)
    assert (period.reserved, period.used) == (0, 0)
    assert UsageRecord.objects.get(job=job).tokens_charged == 0


def test_a_queued_job_whose_message_was_lost_is_sent_again(subscriber, artifacts_dir, settings):
    import redis

    job = job_submit(
        member=membership_personal(subscriber), prompt="Once upon a time", max_new_tokens=20, temperature=0
    )
    redis.Redis.from_url(settings.REDIS_URL).delete(job.queue)  # the broker lost it
    type(job).objects.filter(pk=job.pk).update(enqueued_at=None, created_at=job.created_at - timedelta(hours=1))

    report = jobs_sweep()

    assert report.resent == [str(job.pk)]
    job = _finish_on_a_new_worker(job, artifacts_dir / "logs", "late")
    assert job.status == JobStatus.SUCCEEDED


def test_a_stopped_job_whose_worker_died_is_not_run_again(subscriber, settings):
    settings.WORKER_STALE_SECONDS = 1
    job = job_submit(member=membership_personal(subscriber), prompt="Hello", max_new_tokens=50)
    job_claim(job_id=job.pk, worker="dead/1")
    Worker.objects.create(name="dead/1", hostname="h", pid=1, started_at=timezone.now(),
                          last_heartbeat_at=timezone.now() - timedelta(minutes=5))  # fmt: skip
    GenerationJob.objects.filter(pk=job.pk).update(
        cancel_requested_at=timezone.now(), started_at=timezone.now() - timedelta(minutes=1)
    )

    report = jobs_sweep()

    job.refresh_from_db()
    assert report.cancelled == [str(job.pk)] and report.requeued == []
    assert (job.status, job.tokens_charged) == ("cancelled", 0)
    period = QuotaPeriod.objects.get(workspace__personal_of=subscriber)
    assert (period.reserved, period.used) == (0, 0)
