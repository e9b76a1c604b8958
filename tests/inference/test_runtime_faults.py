"""The worker's side of generation under faults: an engine that hangs, fails or dies, a model
that emits NUL, Redis away, a broker that restarted empty. Every job ends, text delivered is text
charged, and nothing is lost or charged twice."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import redis
from django.conf import settings as django_settings
from django.utils import timezone

from accounts.workspaces import membership_personal
from billing.models import QuotaPeriod, UsageRecord
from inference import broker, executor, streams, worker
from inference.engine import FinishReason, GenerationResult
from inference.models import GenerationJob, JobStatus, Worker
from inference.services import job_submit, jobs_sweep, worker_heartbeat
from inference.tasks import run_generation
from tests.inference.helpers import streamed_text
from tests.support import free_port

pytestmark = pytest.mark.django_db(transaction=True)
MODEL = "inkwell-tiny"


class ScriptedEngine:
    """Stands in for the model: streams ``pieces``, then ends as told, or never (``hang``)."""

    def __init__(self, pieces=(), *, reason=FinishReason.LENGTH, tokens=None, error="", hang=False, alive=True):
        self.pieces = list(pieces)
        self.reason = reason
        self.tokens = len(self.pieces) if tokens is None else tokens
        self.error = error
        self.hang = hang
        self.alive = alive
        self.failure = None if alive else "scheduler thread died"
        self.cancelled: list[str] = []

    def submit(self, request):
        for piece in self.pieces:
            request.on_text(piece)
        if not self.hang:
            request.result = GenerationResult(
                text="".join(self.pieces),
                prompt_tokens=len(request.prompt_ids),
                completion_tokens=self.tokens,
                finish_reason=self.reason,
                error=self.error,
            )
            request.done.set()
        return request

    def cancel(self, request_id, reason=None) -> bool:
        self.cancelled.append(request_id)
        return True

    def stop(self) -> None:
        pass


@pytest.fixture
def engine_slot():
    """Put a scripted engine in this process's engine table for the test, then take it out."""
    installed = []

    def install(engine):
        executor._engines[MODEL] = engine
        installed.append(engine)
        return engine

    yield install
    executor._engines.pop(MODEL, None)


def run_in_thread(job_id, timeout: float) -> bool:
    """Run the Celery task body here, as a worker thread would; True if it returned in time."""
    thread = threading.Thread(target=run_generation, args=[str(job_id)], daemon=True)
    thread.start()
    thread.join(timeout)
    return not thread.is_alive()


def ledger(user) -> tuple[int, int]:
    period = QuotaPeriod.objects.get(workspace__personal_of=user)
    return period.reserved, period.used


def test_a_job_whose_engine_never_answers_ends_at_the_hard_time_limit(subscriber, engine_slot, settings):
    settings.JOB_SOFT_TIME_LIMIT = 1
    settings.JOB_HARD_TIME_LIMIT = 2
    engine = engine_slot(ScriptedEngine(["Hello", " world"], hang=True))
    job = job_submit(
        member=membership_personal(subscriber), prompt="Once upon a time", max_new_tokens=50, temperature=0
    )

    started = time.monotonic()
    assert run_in_thread(job.id, timeout=15), "the task thread was never freed"

    assert time.monotonic() - started < 10
    job.refresh_from_db()
    assert (job.status, job.finish_reason) == (JobStatus.FAILED, FinishReason.TIMEOUT)
    assert job.output_text == "Hello world"
    assert "hard time limit of 2 s" in job.error_message
    assert str(job.id) in engine.cancelled
    delivered = len(executor.catalog.tokenizer_for(MODEL)("Hello world", add_special_tokens=False).input_ids)
    assert job.tokens_charged == job.prompt_tokens + delivered
    assert ledger(subscriber) == (0, job.tokens_charged)


def test_text_streamed_before_a_failure_is_charged(subscriber, engine_slot):
    engine_slot(ScriptedEngine(["It was", " a dark"], reason=FinishReason.ERROR, tokens=3, error="invalid numbers"))
    job = job_submit(
        member=membership_personal(subscriber), prompt="Once upon a time", max_new_tokens=50, temperature=0
    )

    assert run_in_thread(job.id, timeout=30)

    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.output_text == "It was a dark" == streamed_text(job)
    assert job.tokens_charged == job.prompt_tokens + 3
    assert "charged" in job.error_message and "not charged" not in job.error_message
    assert UsageRecord.objects.get(job=job).tokens_charged == job.tokens_charged
    assert ledger(subscriber) == (0, job.tokens_charged)


def test_a_failure_before_any_text_costs_nothing(subscriber, engine_slot):
    engine_slot(ScriptedEngine([], reason=FinishReason.ERROR, tokens=0, error="out of memory"))
    job = job_submit(
        member=membership_personal(subscriber), prompt="Once upon a time", max_new_tokens=50, temperature=0
    )

    assert run_in_thread(job.id, timeout=30)

    job.refresh_from_db()
    assert (job.status, job.tokens_charged) == (JobStatus.FAILED, 0)
    assert "not charged" in job.error_message
    assert ledger(subscriber) == (0, 0)


def test_a_timeout_after_text_charges_the_text(subscriber, engine_slot):
    engine_slot(ScriptedEngine(["Long", " story"], reason=FinishReason.TIMEOUT, tokens=2))
    job = job_submit(
        member=membership_personal(subscriber), prompt="Once upon a time", max_new_tokens=50, temperature=0
    )

    assert run_in_thread(job.id, timeout=30)

    job.refresh_from_db()
    assert (job.status, job.output_text) == (JobStatus.FAILED, "Long story")
    assert job.tokens_charged == job.prompt_tokens + 2


def test_nul_in_model_output_is_stored_and_streamed_as_a_replacement_character(subscriber, engine_slot):
    engine_slot(ScriptedEngine(["a\x00", "b"]))
    job = job_submit(
        member=membership_personal(subscriber), prompt="Once upon a time", max_new_tokens=50, temperature=0
    )

    assert run_in_thread(job.id, timeout=60)

    job.refresh_from_db()
    assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 1)
    assert job.output_text == "a\ufffdb" == streamed_text(job)
    assert job.tokens_charged == job.prompt_tokens + 2
    assert ledger(subscriber) == (0, job.tokens_charged)


def test_a_job_runs_and_finishes_with_redis_down(subscriber, engine_slot, monkeypatch):
    engine_slot(ScriptedEngine(["Fine", " anyway"]))
    job = job_submit(
        member=membership_personal(subscriber), prompt="Once upon a time", max_new_tokens=50, temperature=0
    )
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.2)
    monkeypatch.setattr(streams, "client", lambda: dead)

    assert run_in_thread(job.id, timeout=60)

    job.refresh_from_db()
    assert (job.status, job.output_text) == (JobStatus.SUCCEEDED, "Fine anyway")
    assert ledger(subscriber) == (0, job.tokens_charged)


def test_the_sweeper_survives_the_broker_being_down(subscriber, monkeypatch, settings):
    settings.WORKER_STALE_SECONDS = 1
    orphan = job_submit(
        member=membership_personal(subscriber), prompt="Once upon a time", max_new_tokens=20, temperature=0
    )
    long_ago = timezone.now() - timedelta(minutes=5)
    GenerationJob.objects.filter(pk=orphan.pk).update(
        status=JobStatus.RUNNING, worker="gone@host/1", attempts=1, started_at=long_ago
    )
    unsent = job_submit(
        member=membership_personal(subscriber), prompt="Once upon a time", max_new_tokens=20, temperature=0
    )
    GenerationJob.objects.filter(pk=unsent.pk).update(enqueued_at=None, created_at=long_ago)
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.2)
    monkeypatch.setattr(broker, "_client", lambda: dead)
    monkeypatch.setattr(streams, "client", lambda: dead)

    def refuse(*args, **kwargs):
        raise redis.ConnectionError("broker down")

    monkeypatch.setattr(run_generation.app, "send_task", refuse)

    report = jobs_sweep()

    assert report.requeued == [str(orphan.pk)]
    assert report.broker_down and report.resent == []
    orphan.refresh_from_db()
    assert orphan.status == JobStatus.QUEUED and orphan.enqueued_at is None  # the next sweep sends it

    monkeypatch.undo()
    assert sorted(jobs_sweep().resent) == sorted([str(orphan.pk), str(unsent.pk)])


def test_queued_jobs_are_resent_after_the_broker_restarts_empty(subscriber):
    job = job_submit(
        member=membership_personal(subscriber), prompt="Once upon a time", max_new_tokens=20, temperature=0
    )
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    jobs_sweep()  # the first look at this broker marks it
    assert jobs_sweep().resent == []  # a broker that kept its messages: nothing to resend
    assert client.llen(job.queue) >= 1

    client.flushdb()  # what a restart without persistence leaves

    assert jobs_sweep().resent == [str(job.pk)]
    assert client.llen(job.queue) == 1
    assert jobs_sweep().resent == []


def test_a_worker_whose_engine_died_stops_reporting_healthy_and_shuts_down(engine_slot, monkeypatch):
    engine_slot(ScriptedEngine(alive=False))
    name = worker.worker_name()
    worker_heartbeat(name=name, hostname="host", pid=1, queues=["gen.low"])
    signals = []
    monkeypatch.setattr(worker.os, "kill", lambda pid, sig: signals.append(sig))
    monkeypatch.setattr(worker, "_stop", threading.Event())
    monkeypatch.setattr(worker, "_state", {})

    assert worker.engine_failure_check()

    assert not Worker.objects.filter(name=name).exists()
    assert signals == [worker.signal.SIGTERM]
    assert "scheduler thread died" in worker._state["engine_failed"]


def test_a_job_on_a_dead_engine_ends_at_once_with_what_it_delivered(subscriber, engine_slot):
    engine_slot(ScriptedEngine(["Half"], hang=True, alive=False))
    job = job_submit(
        member=membership_personal(subscriber), prompt="Once upon a time", max_new_tokens=50, temperature=0
    )

    assert run_in_thread(job.id, timeout=10)

    job.refresh_from_db()
    assert (job.status, job.finish_reason, job.output_text) == (JobStatus.FAILED, FinishReason.ERROR, "Half")
    assert job.tokens_charged > job.prompt_tokens


def test_queued_jobs_whose_messages_a_dead_worker_took_are_sent_again_at_once(subscriber, settings):
    settings.WORKER_STALE_SECONDS = 1
    job = job_submit(
        member=membership_personal(subscriber), prompt="Once upon a time", max_new_tokens=20, temperature=0
    )
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    jobs_sweep()  # the first look at this broker marks it
    assert jobs_sweep().resent == []
    # A worker took the message (the broker holds it as unacknowledged until its visibility
    # timeout) and was SIGKILLed before claiming the job.
    client.delete(job.queue)
    worker_heartbeat(name="killed@host/9", hostname="host", pid=9, queues=[job.queue])
    Worker.objects.filter(name="killed@host/9").update(last_heartbeat_at=timezone.now() - timedelta(minutes=1))

    report = jobs_sweep()

    assert report.resent == [str(job.pk)]
    assert client.llen(job.queue) == 1
    assert not Worker.objects.filter(name="killed@host/9").exists()
    assert jobs_sweep().resent == []  # once


def test_a_claim_waits_out_a_database_that_blinks(subscriber, engine_slot, monkeypatch):
    from django.db import OperationalError

    from inference import services, tasks

    engine_slot(ScriptedEngine(["Still", " here"]))
    job = job_submit(
        member=membership_personal(subscriber), prompt="Once upon a time", max_new_tokens=50, temperature=0
    )
    real_claim = services.job_claim
    failures = iter([OperationalError("the database is restarting")] * 2)

    def blinking_claim(**kwargs):
        error = next(failures, None)
        if error is not None:
            raise error
        return real_claim(**kwargs)

    monkeypatch.setattr(services, "job_claim", blinking_claim)
    monkeypatch.setattr(tasks, "CLAIM_RETRY_SECONDS", (0.01, 0.01, 0.01))

    assert run_in_thread(job.id, timeout=30)

    job.refresh_from_db()
    assert (job.status, job.output_text) == (JobStatus.SUCCEEDED, "Still here")
