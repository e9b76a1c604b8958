"""Live output through Redis: one stream per job, so a late subscriber first reads what was
already produced. Events: start (a worker claimed the job; attempt > 1 means start over), delta
(new text), end (final status and token counts, published after the database commit)."""

from __future__ import annotations

import base64
import functools
import json
import time

import redis
import redis.asyncio
from django.conf import settings

from core import crypto

CANCEL_CHANNEL = "inkwell:cancel"


def minute_window_count(key: str) -> int:
    """One more hit in this clock minute's window under ``key`` (one atomic INCR, shared by every
    process), and how many hits it now holds. Raises if Redis is away: callers decide whether that
    allows or refuses."""
    pipe = client().pipeline()
    pipe.incr(key)
    pipe.expire(key, 120)
    count, _ = pipe.execute()
    return count


def seconds_left_in_minute() -> int:
    return 60 - int(time.time() % 60)


def stream_key(job_id) -> str:
    return f"inkwell:job:{job_id}:stream"


@functools.cache
def client() -> redis.Redis:
    # Timeouts: a Redis that stopped answering must not hang a worker's flush or the sweeper.
    return redis.Redis.from_url(
        settings.REDIS_URL,
        decode_responses=True,
        health_check_interval=30,
        socket_connect_timeout=2,
        socket_timeout=3,
    )


@functools.cache
def async_client() -> redis.asyncio.Redis:
    return redis.asyncio.Redis.from_url(settings.REDIS_URL, decode_responses=True)


def publish_start(job_id, *, attempt: int) -> None:
    key = stream_key(job_id)
    pipe = client().pipeline()
    pipe.delete(key)  # a new attempt starts from nothing
    pipe.xadd(key, {"event": "start", "attempt": attempt})
    pipe.expire(key, settings.STREAM_TTL_SECONDS)
    pipe.execute()


def _delta_aad(job_id) -> bytes:
    return crypto.aad_for("stream", job_id, "delta")


def delta_seal(job, text: str) -> str:
    """New text of a job as Redis keeps it: sealed with its workspace's data key, like its row."""
    return base64.b64encode(crypto.seal(job.workspace_id, text.encode(), _delta_aad(job.id))).decode()


def delta_key_id(value: str) -> int:
    return crypto.sealed_key_id(base64.b64decode(value))


def delta_open(job, value: str) -> str:
    return crypto.open_sealed(job.workspace_id, base64.b64decode(value), _delta_aad(job.id)).decode()


def publish_delta(job, text: str) -> None:
    # The TTL again: a stream deleted meanwhile (its account was deleted) must not come back forever.
    pipe = client().pipeline(transaction=False)
    pipe.xadd(stream_key(job.id), {"event": "delta", "text": delta_seal(job, text)})
    pipe.expire(stream_key(job.id), settings.STREAM_TTL_SECONDS)
    pipe.execute()


def end_payload(job) -> dict:
    return {
        "status": job.status,
        "finish_reason": job.finish_reason,
        "prompt_tokens": job.prompt_tokens,
        "completion_tokens": job.completion_tokens,
        "tokens_charged": job.tokens_charged,
        "error": job.error_message,
    }


def publish_end(job) -> None:
    key = stream_key(job.id)
    pipe = client().pipeline()
    pipe.xadd(key, {"event": "end", "data": json.dumps(end_payload(job))})
    pipe.expire(key, settings.STREAM_TTL_SECONDS)
    pipe.execute()


def publish_cancel(job_id) -> None:
    """Tell every worker to stop this job at its next token (the one running it will)."""
    client().publish(CANCEL_CHANNEL, str(job_id))


def streams_delete(job_ids: list[str]) -> None:
    """Drop the token streams of these jobs from Redis (their account is gone)."""
    if job_ids:
        client().delete(*(stream_key(job_id) for job_id in job_ids))
