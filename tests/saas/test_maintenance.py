"""The sweeper and retention run on their clock whatever the generation backlog, and with Redis down
(Invariant 10): `manage.py maintenance` runs them straight against the database."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
import uuid
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from accounts.workspaces import membership_personal
from billing.models import QuotaPeriod
from inference.models import GenerationJob, JobStatus
from inference.services import job_submit
from saas.celery import app as celery_app
from saas.maintenance import Chore, Outcome, chore_run, maintenance_loop, sweep_last_finished
from tests.factories import PlanFactory, SubscriptionFactory, UserFactory
from tests.support import BASE_DIR, ManagedProcess, free_port, process_env, start_worker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)
DEAD_WORKER = "gone@nowhere/4242"
BACKLOG_QUEUE = "gen.low"


@pytest.fixture
def subscriber(tiny_model_path):
    plan = PlanFactory(slug="pro", queue_priority="gen.normal", retention_days=1)
    return SubscriptionFactory(plan=plan, user=UserFactory(email="pro@example.com")).workspace.personal_of


def _broker() -> redis.Redis:
    return redis.Redis.from_url(settings.CELERY_BROKER_URL)


def _job_on_dead_worker(user, *, attempts: int) -> GenerationJob:
    """A job that a worker claimed an hour ago and then died with (no heartbeat row at all)."""
    job = job_submit(member=membership_personal(user), prompt="Once upon a time", max_new_tokens=20, temperature=0)
    _broker().delete(job.queue)  # its message was delivered to that worker long ago
    GenerationJob.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING,
        worker=DEAD_WORKER,
        attempts=attempts,
        started_at=timezone.now() - timedelta(hours=1),
    )
    return job


def _job_finished_long_ago(user) -> GenerationJob:
    job = job_submit(member=membership_personal(user), prompt="An old story", max_new_tokens=5, temperature=0)
    _broker().delete(job.queue)
    GenerationJob.objects.filter(pk=job.pk).update(
        status=JobStatus.SUCCEEDED, finished_at=timezone.now() - timedelta(days=2)
    )
    return job


def _start_maintenance(log_dir, name: str, **env: str) -> ManagedProcess:
    env = {"SWEEP_INTERVAL_SECONDS": "1", "LOG_LEVEL": "INFO", **env}
    args = [sys.executable, str(BASE_DIR / "manage.py"), "maintenance"]
    return ManagedProcess(args, process_env(**env), log_dir / f"maintenance-{name}.log")


def _status(job) -> str:
    return GenerationJob.objects.get(pk=job.pk).status


def _stops_cleanly_on_sigterm(process: ManagedProcess) -> None:
    process.process.send_signal(signal.SIGTERM)
    assert process.process.wait(timeout=10) == 0, process.log()[-3000:]
    assert "maintenance: stopped" in process.log()


class Backlog:
    """Keeps the broker's gen.low queue full of generation messages (for jobs that do not exist,
    so each costs the worker a claim that finds nothing) and records the lowest length seen."""

    def __init__(self, *, low_water: int = 2000, batch: int = 2000):
        self.client = _broker()
        self.low_water = low_water
        self.batch = batch
        self.lowest: int | None = None
        self.pushed = 0
        self._stop = threading.Event()
        self._template = self._message_template()
        self.top_up()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _message_template(self) -> dict:
        celery_app.send_task("inference.run_generation", args=[str(uuid.uuid4())], queue=BACKLOG_QUEUE)
        return json.loads(self.client.rpop(BACKLOG_QUEUE))

    def _message(self) -> bytes:
        message = json.loads(json.dumps(self._template))
        task_id = str(uuid.uuid4())
        message["headers"]["id"] = message["headers"]["root_id"] = task_id
        message["properties"]["correlation_id"] = task_id
        message["properties"]["delivery_tag"] = str(uuid.uuid4())
        return json.dumps(message).encode()

    def top_up(self) -> None:
        length = self.client.llen(BACKLOG_QUEUE)
        if self.lowest is not None:
            self.lowest = min(self.lowest, length)
        if length < self.low_water:
            self.client.lpush(BACKLOG_QUEUE, *(self._message() for _ in range(self.batch)))
            self.pushed += self.batch
        if self.lowest is None:
            self.lowest = self.client.llen(BACKLOG_QUEUE)

    def consumed(self) -> int:
        return self.pushed - self.client.llen(BACKLOG_QUEUE)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.top_up()

    def __enter__(self) -> Backlog:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def test_a_dead_workers_jobs_are_swept_on_schedule_while_gen_low_stays_full(subscriber, artifacts_dir):
    log_dir = artifacts_dir / "logs"
    doomed = _job_on_dead_worker(subscriber, attempts=settings.JOB_MAX_ATTEMPTS)
    rescued = _job_on_dead_worker(subscriber, attempts=1)
    expired = _job_finished_long_ago(subscriber)
    broker = _broker()
    worker = maintenance = None
    try:
        with Backlog() as backlog:
            # Today's Celery beat path: the sweep as a message on the maintenance queue.
            celery_app.send_task("inference.sweep_jobs", queue="maintenance")
            worker = start_worker(log_dir, name="backlog", concurrency=2, INFERENCE_ENGINE="noop", TORCH_THREADS="1")
            wait_until(
                lambda: backlog.consumed() > 100,
                timeout=60,
                what="the worker to consume gen.low",
                process=worker.process,
            )
            time.sleep(4)
            # The worker is busy with gen.low and never reads the sweep message: nothing was swept.
            assert broker.llen("maintenance") == 1
            assert (_status(doomed), _status(rescued)) == (JobStatus.RUNNING, JobStatus.RUNNING)

            maintenance = _start_maintenance(log_dir, "backlog")
            wait_until(
                lambda: _status(doomed) == JobStatus.FAILED and _status(rescued) == JobStatus.SUCCEEDED,
                timeout=30,
                what="the sweeper to take the dead worker's jobs back",
                process=maintenance.process,
            )
            wait_until(
                lambda: GenerationJob.objects.get(pk=expired.pk).texts_erased_at is not None,
                timeout=10,
                what="retention to erase the old job's texts",
                process=maintenance.process,
            )
            # All that while, the backlog never drained and the broker's sweep was never read.
            assert broker.llen(BACKLOG_QUEUE) > 0 and backlog.lowest > 0
            assert broker.llen("maintenance") == 1
        doomed.refresh_from_db()
        assert "stopped its worker" in doomed.error_message
        rescued.refresh_from_db()
        assert rescued.attempts == 2 and rescued.worker != DEAD_WORKER
        period = QuotaPeriod.objects.get(workspace__personal_of=subscriber)
        assert period.reserved == expired.tokens_reserved  # only the job this test closed by hand
        _stops_cleanly_on_sigterm(maintenance)
    finally:
        for process in (maintenance, worker):
            if process is not None:
                process.stop()
        broker.delete(BACKLOG_QUEUE, "maintenance")


def test_the_sweeper_and_retention_run_with_redis_down(subscriber, artifacts_dir):
    doomed = _job_on_dead_worker(subscriber, attempts=settings.JOB_MAX_ATTEMPTS)
    rescued = _job_on_dead_worker(subscriber, attempts=1)
    expired = _job_finished_long_ago(subscriber)
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    maintenance = _start_maintenance(
        artifacts_dir / "logs", "no-redis", REDIS_URL=nowhere, CELERY_BROKER_URL=nowhere, CELERY_RESULT_BACKEND=nowhere
    )
    try:
        wait_until(
            lambda: (
                (_status(doomed), _status(rescued)) == (JobStatus.FAILED, JobStatus.QUEUED)
                and GenerationJob.objects.get(pk=expired.pk).texts_erased_at is not None
            ),
            timeout=30,
            what="the sweeper and retention without Redis",
            process=maintenance.process,
        )
        rescued.refresh_from_db()
        assert rescued.worker == "" and rescued.started_at is None
        # It keeps going: more sweeps, each failing to reach the broker, none stopping the process.
        wait_until(lambda: maintenance.log().count("could not record the sweep") >= 3, timeout=15, what="more sweeps")
        assert maintenance.process.poll() is None
        _stops_cleanly_on_sigterm(maintenance)
    finally:
        maintenance.stop()


def test_once_runs_each_chore_and_exits_for_cron(subscriber, capsys):
    doomed = _job_on_dead_worker(subscriber, attempts=settings.JOB_MAX_ATTEMPTS)
    expired = _job_finished_long_ago(subscriber)

    call_command("maintenance", "--once")

    assert capsys.readouterr().out.strip() == "sweep: done, retention: done"
    assert _status(doomed) == JobStatus.FAILED
    assert GenerationJob.objects.get(pk=expired.pk).texts_erased_at is not None
    assert sweep_last_finished() is not None


def test_once_with_only_runs_that_chore(subscriber, capsys):
    doomed = _job_on_dead_worker(subscriber, attempts=settings.JOB_MAX_ATTEMPTS)
    expired = _job_finished_long_ago(subscriber)

    call_command("maintenance", "--once", "--only", "retention")

    assert capsys.readouterr().out.strip() == "retention: done"
    assert _status(doomed) == JobStatus.RUNNING
    assert GenerationJob.objects.get(pk=expired.pk).texts_erased_at is not None


def test_a_chore_that_fails_is_logged_and_run_again_at_the_next_tick(caplog):
    runs: list[float] = []
    now = [0.0]

    def flaky() -> int:
        runs.append(now[0])
        if len(runs) == 1:
            raise ConnectionError("the database went away")
        return 0

    def sleep(seconds: float) -> None:
        now[0] += seconds

    maintenance_loop(
        chores=[Chore("flaky", 1.0, flaky)], stopping=lambda: now[0] >= 3.5, clock=lambda: now[0], sleep=sleep
    )

    assert runs == pytest.approx([0.0, 1.0, 2.0, 3.0])
    assert "maintenance: flaky failed" in caplog.text


def test_each_chore_runs_at_start_then_on_its_own_interval():
    runs: list[tuple[str, float]] = []
    now = [0.0]

    def chore(name: str, interval: float) -> Chore:
        return Chore(name, interval, lambda: runs.append((name, now[0])))

    def sleep(seconds: float) -> None:
        now[0] += seconds

    maintenance_loop(
        chores=[chore("sweep", 30), chore("retention", 3600)],
        stopping=lambda: now[0] >= 3700,
        clock=lambda: now[0],
        sleep=sleep,
        tick_seconds=5,
    )

    sweeps = [at for name, at in runs if name == "sweep"]
    assert [at for name, at in runs if name == "retention"] == pytest.approx([0, 3600])
    assert len(sweeps) == 124 and sweeps[:3] == pytest.approx([0, 30, 60])


def _other_session():
    """A second PostgreSQL session, as another maintenance process would have."""
    import psycopg

    db = connection.settings_dict
    return psycopg.connect(
        dbname=db["NAME"],
        user=db["USER"],
        password=db["PASSWORD"] or None,
        host=db["HOST"] or None,
        port=db["PORT"] or None,
        autocommit=True,
    )


@pytest.mark.skipif(settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql", reason="PostgreSQL")
def test_a_chore_another_process_is_running_is_skipped_and_its_lock_is_released_after_a_failure():
    runs = []
    chore = Chore("sweep", 30, lambda: runs.append(1))
    with _other_session() as other:
        other.execute("SELECT pg_advisory_lock(%s)", [chore.lock_key])
        assert chore_run(chore) is Outcome.SKIPPED
        assert runs == []
        other.execute("SELECT pg_advisory_unlock(%s)", [chore.lock_key])

        assert chore_run(chore) is Outcome.DONE
        assert runs == [1]

        def broken():
            raise RuntimeError("boom")

        assert chore_run(Chore("sweep", 30, broken)) is Outcome.FAILED
        # Another process can take it: the failed run did not keep the lock.
        assert other.execute("SELECT pg_try_advisory_lock(%s)", [chore.lock_key]).fetchone()[0] is True
        other.execute("SELECT pg_advisory_unlock(%s)", [chore.lock_key])
