"""Jobs through a real Celery worker process, real Redis and the real database."""

from __future__ import annotations

import json
import re
import time
import urllib.request

import pytest
import torch

from accounts.workspaces import membership_personal
from billing.models import MemberQuota, QuotaPeriod, UsageRecord
from inference.catalog import prompt_token_ids
from inference.engine import ModelSpec, load_model
from inference.models import JobStatus
from inference.services import job_cancel, job_submit
from inference.tasks import run_generation
from tests.inference.helpers import (
    stream_events,
    streamed_text,
    wait_for_status,
    wait_until_final,
    wait_until_streaming,
)

pytestmark = pytest.mark.django_db(transaction=True)
PROMPT = "Once upon a time"


def greedy_reference(path, prompt: str, new_tokens: int) -> list[int]:
    loaded = load_model(ModelSpec("ref", str(path), dtype="float32", device="cpu"))
    ids = prompt_token_ids("inkwell-tiny", prompt=prompt)
    with torch.inference_mode():
        out = loaded.model.generate(
            torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=new_tokens, do_sample=False,
        )  # fmt: skip
    return loaded.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)


def test_a_submitted_job_runs_on_the_worker_streams_and_is_charged_exactly(celery_worker, subscriber, tiny_model_path):
    job = job_submit(member=membership_personal(subscriber), prompt=PROMPT, max_new_tokens=40, temperature=0)

    job = wait_until_final(job)

    assert job.status == JobStatus.SUCCEEDED, job.error_message
    assert job.attempts == 1
    assert job.output_text == greedy_reference(tiny_model_path, PROMPT, job.completion_tokens)
    assert 0 < job.completion_tokens <= 40
    assert job.tokens_charged == job.prompt_tokens + job.completion_tokens
    period = QuotaPeriod.objects.get(workspace__personal_of=subscriber)
    assert (period.reserved, period.used) == (0, job.tokens_charged)
    usage = UsageRecord.objects.get(job=job)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.tokens_charged) == (
        job.prompt_tokens,
        job.completion_tokens,
        job.tokens_charged,
    )
    assert usage.worker == job.worker and usage.plan_slug == "pro"
    # Charged to the personal workspace's pool and to the member's own line under it.
    assert (usage.user_id, usage.workspace_id) == (subscriber.pk, period.workspace_id)
    member_line = MemberQuota.objects.get(quota_period=period, user=subscriber)
    assert (member_line.reserved, member_line.used) == (0, job.tokens_charged)
    events = stream_events(job)
    assert events[0]["event"] == "start"
    assert streamed_text(job) == job.output_text
    assert events[-1]["event"] == "end" and events[-1]["status"] == "succeeded"


def test_the_sse_endpoint_sends_the_text_then_one_final_event(celery_worker, web_server, subscriber, client):
    job = job_submit(member=membership_personal(subscriber), prompt=PROMPT, max_new_tokens=300, temperature=0)
    client.force_login(subscriber)
    request = urllib.request.Request(
        f"{web_server.url}/jobs/{job.pk}/stream", headers={"Cookie": f"sessionid={client.cookies['sessionid'].value}"}
    )

    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        body = response.read().decode()

    events = [(m.group(1), json.loads(m.group(2))) for m in re.finditer(r"event: (\w+)\ndata: (.*)\n\n", body)]
    job.refresh_from_db()
    text = ""
    for name, data in events:
        if name == "snapshot":
            text = data["text"]
        elif name == "delta":
            text += data["text"]
    assert text == job.output_text != ""
    name, final = events[-1]
    assert name == "end"
    assert final["status"] == "succeeded"
    assert final["completion_tokens"] == job.completion_tokens
    assert [n for n, _ in events].count("end") == 1


def test_another_users_stream_is_a_404(web_server, subscriber, client, other_user):
    job = job_submit(member=membership_personal(subscriber), prompt=PROMPT, max_new_tokens=5)
    job_cancel(job=job)
    client.force_login(other_user)
    request = urllib.request.Request(
        f"{web_server.url}/jobs/{job.pk}/stream", headers={"Cookie": f"sessionid={client.cookies['sessionid'].value}"}
    )

    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=10)

    assert error.value.code == 404


def test_cancelling_a_running_job_keeps_its_text_and_charges_what_was_generated(celery_worker, subscriber):
    job = job_submit(member=membership_personal(subscriber), prompt=PROMPT, max_new_tokens=1000, temperature=0)
    wait_for_status(job, JobStatus.RUNNING)
    wait_until_streaming(job)

    job_cancel(job=job)
    job = wait_until_final(job)

    assert job.status == JobStatus.CANCELLED
    assert job.finish_reason == "cancelled"
    assert 0 < job.completion_tokens < 1000
    assert job.output_text != ""
    assert job.tokens_charged == job.prompt_tokens + job.completion_tokens
    period = QuotaPeriod.objects.get(workspace__personal_of=subscriber)
    assert (period.reserved, period.used) == (0, job.tokens_charged)
    assert UsageRecord.objects.filter(job=job).count() == 1


def test_the_same_task_delivered_twice_runs_once(celery_worker, subscriber):
    log_before = celery_worker.log().count("Task inference.run_generation")
    job = job_submit(member=membership_personal(subscriber), prompt=PROMPT, max_new_tokens=30, temperature=0)
    run_generation.apply_async(args=[str(job.pk)], queue=job.queue)

    job = wait_until_final(job)
    deadline = time.monotonic() + 30
    while celery_worker.log().count("Task inference.run_generation") - log_before < 4 and time.monotonic() < deadline:
        time.sleep(0.1)  # both deliveries received and finished ("received" + "succeeded" each)

    assert celery_worker.log().count("Task inference.run_generation") - log_before == 4
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert job.attempts == 1
    assert UsageRecord.objects.filter(job=job).count() == 1
    period = QuotaPeriod.objects.get(workspace__personal_of=subscriber)
    assert (period.reserved, period.used) == (0, job.tokens_charged)
