"""A model served by an OpenAI-compatible inference server (INFERENCE_REMOTE): a real
`transformers serve` process on the CPU with the test model, a real Celery worker that streams
from it, real Redis and the real database. The worker is needed: cancels arrive through Redis,
and the worker's own settings read INFERENCE_REMOTE at start-up."""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.request
from pathlib import Path

import pytest

from accounts.workspaces import membership_personal
from billing.models import QuotaPeriod, UsageRecord
from inference.models import JobStatus
from inference.services import job_cancel, job_submit
from tests.inference.helpers import (
    stream_events,
    streamed_text,
    wait_for_status,
    wait_until_final,
    wait_until_streaming,
)
from tests.support import ManagedProcess, free_port, start_worker_ready, wait_until

pytestmark = pytest.mark.django_db(transaction=True)
PROMPT = "Once upon a time"
LONG = 1000  # about 10 s on the test server: time to act while it streams


class InferenceServer:
    """`transformers serve` with the test model, offline, on a fixed port (so it can come back)."""

    def __init__(self, model_path: Path, log_dir: Path):
        self.model_path = model_path
        self.port = free_port()
        self.log_dir = log_dir
        self.process: ManagedProcess | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        self.starts += 1
        cli = Path(sys.executable).with_name("transformers")
        args = [str(cli), "serve", "--device", "cpu", "--host", "127.0.0.1", "--port", str(self.port)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        self.process = ManagedProcess([*args, str(self.model_path)], env, self.log_dir / f"serve-{self.starts}.log")
        wait_until(self.healthy, timeout=120, what="transformers serve", process=self.process.process)

    def healthy(self) -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as response:
            return response.status == 200

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-stream, as a crashed or preempted host does."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.process.wait()
        self.process.stop()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.process.poll() is None


@pytest.fixture(scope="module")
def inference_server(tiny_model_path, artifacts_dir):
    server = InferenceServer(tiny_model_path, artifacts_dir / "logs")
    server.start()
    yield server
    if server.running:
        server.process.stop()


@pytest.fixture(scope="module")
def remote_worker(django_db_setup, django_db_blocker, inference_server, artifacts_dir):
    remote = {"inkwell-tiny": {"url": inference_server.url, "timeout": 20}}
    with django_db_blocker.unblock():
        worker = start_worker_ready(artifacts_dir / "logs", name="remote", INFERENCE_REMOTE=json.dumps(remote))
    yield worker
    worker.stop()


@pytest.fixture
def server(inference_server):
    """The module's server, up at the start of each test (a test may have killed it)."""
    if not inference_server.running:
        inference_server.start()
    return inference_server


def assert_settled_once(job, user) -> None:
    period = QuotaPeriod.objects.get(workspace__personal_of=user)
    assert (period.reserved, period.used) == (0, job.tokens_charged)
    usage = UsageRecord.objects.filter(job=job)
    if job.tokens_charged:
        assert [(u.completion_tokens, u.tokens_charged) for u in usage] == [(job.completion_tokens, job.tokens_charged)]
    else:
        assert usage.filter(tokens_charged__gt=0).count() == 0


def test_a_job_streams_from_the_server_and_is_charged_the_servers_usage_once(remote_worker, server, subscriber):
    job = job_submit(member=membership_personal(subscriber), prompt=PROMPT, max_new_tokens=LONG, temperature=0)

    wait_until_streaming(job)
    running = wait_for_status(job, (JobStatus.RUNNING, JobStatus.SUCCEEDED))
    text_while_running = streamed_text(job)
    job = wait_until_final(job)

    assert running.status == JobStatus.RUNNING  # text reached the stream before the job ended
    assert job.status == JobStatus.SUCCEEDED, job.error_message
    assert job.output_text.startswith(text_while_running) and len(job.output_text) > len(text_while_running)
    # The random test model never stops early: the server reports all of them as its usage.
    assert (job.finish_reason, job.completion_tokens) == ("length", LONG)
    assert job.tokens_charged == job.prompt_tokens + LONG
    assert_settled_once(job, subscriber)
    events = stream_events(job)
    assert streamed_text(job) == job.output_text
    assert [e["event"] for e in events].count("end") == 1 and events[-1]["status"] == "succeeded"


def test_jobs_run_side_by_side_on_one_worker_process(remote_worker, server, subscriber):
    jobs = [
        job_submit(member=membership_personal(subscriber), prompt=f"{PROMPT} {n}", max_new_tokens=30, temperature=0)
        for n in range(3)
    ]

    jobs = [wait_until_final(job) for job in jobs]

    assert [job.status for job in jobs] == [JobStatus.SUCCEEDED] * 3
    assert {job.worker for job in jobs} == {jobs[0].worker}
    assert all(job.completion_tokens == 30 and job.output_text for job in jobs)


def test_cancelling_a_running_job_closes_the_stream_and_charges_the_text_delivered(remote_worker, server, subscriber):
    job = job_submit(member=membership_personal(subscriber), prompt=PROMPT, max_new_tokens=LONG, temperature=0)
    wait_until_streaming(job)

    job_cancel(job=job)
    job = wait_until_final(job, timeout=15)

    assert job.status == JobStatus.CANCELLED
    assert 0 < job.completion_tokens < LONG
    assert job.output_text != "" and streamed_text(job) == job.output_text
    assert job.tokens_charged == job.prompt_tokens + job.completion_tokens
    assert_settled_once(job, subscriber)


def test_a_server_killed_mid_job_fails_it_clearly_charging_what_was_delivered(remote_worker, server, subscriber):
    job = job_submit(member=membership_personal(subscriber), prompt=PROMPT, max_new_tokens=LONG, temperature=0)
    wait_until_streaming(job)

    server.kill()
    job = wait_until_final(job, timeout=30)

    assert job.status == JobStatus.FAILED
    assert "model server" in job.error_message and "charged" in job.error_message
    assert 0 < job.completion_tokens < LONG and job.output_text != ""
    assert job.tokens_charged == job.prompt_tokens + job.completion_tokens
    assert_settled_once(job, subscriber)

    server.start()
    after = wait_until_final(
        job_submit(member=membership_personal(subscriber), prompt=PROMPT, max_new_tokens=20, temperature=0)
    )

    assert after.status == JobStatus.SUCCEEDED, after.error_message
    assert after.worker == job.worker  # the same worker: a server restart needs no worker restart


def test_a_server_that_cannot_be_reached_fails_the_job_and_charges_nothing(remote_worker, server, subscriber):
    server.kill()

    job = wait_until_final(
        job_submit(member=membership_personal(subscriber), prompt=PROMPT, max_new_tokens=20), timeout=30
    )

    assert job.status == JobStatus.FAILED
    assert "could not be reached" in job.error_message and "not charged" in job.error_message
    assert (job.completion_tokens, job.tokens_charged) == (0, 0)
    assert_settled_once(job, subscriber)


def test_a_request_the_server_refuses_fails_with_its_answer_and_charges_nothing(remote_worker, server, subscriber):
    # transformers serve knows no top_k in its completions API and answers 422.
    job = job_submit(member=membership_personal(subscriber), prompt=PROMPT, max_new_tokens=20, temperature=0.8, top_k=5)

    job = wait_until_final(job, timeout=30)

    assert job.status == JobStatus.FAILED
    assert "answered 422" in job.error_message and "top_k" in job.error_message
    assert job.tokens_charged == 0
    assert_settled_once(job, subscriber)
