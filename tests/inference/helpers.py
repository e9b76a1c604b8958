from __future__ import annotations

import json

import redis
from django.conf import settings

from inference.models import FINAL_STATUSES, GenerationJob
from inference.streams import delta_open, stream_key
from tests.support import wait_until


def wait_for_status(job, statuses, timeout: float = 60) -> GenerationJob:
    statuses = (statuses,) if isinstance(statuses, str) else tuple(statuses)
    wait_until(
        lambda: GenerationJob.objects.get(pk=job.pk).status in statuses,
        timeout=timeout,
        what=f"job {job.pk} to become {'/'.join(statuses)}",
    )
    return GenerationJob.objects.get(pk=job.pk)


def wait_until_final(job, timeout: float = 90) -> GenerationJob:
    return wait_for_status(job, FINAL_STATUSES, timeout)


def stream_events(job) -> list[dict]:
    client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
    events = []
    for _, fields in client.xrange(stream_key(job.pk)):
        if "data" in fields:
            fields = {**fields, **json.loads(fields["data"])}
        events.append(fields)
    return events


def streamed_text(job) -> str:
    """The text a job's stream carried, opened (Redis holds it sealed)."""
    return "".join(delta_open(job, e["text"]) for e in stream_events(job) if e["event"] == "delta")


def wait_until_streaming(job, timeout: float = 60) -> None:
    wait_until(lambda: streamed_text(job) != "", timeout=timeout, what=f"text of job {job.pk}")
