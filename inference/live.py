"""Live output, the reading side: following a job as it runs (from its Redis stream, or from its
row when Redis is away), the server-sent-event helpers, and the stream slots that cap how many
streams one user holds. One implementation for the dashboard (views.job_stream), the REST API
(openai_api.api_job_stream serves /api/v1/jobs/<id>/stream) and the OpenAI-compatible API.
The writing side (what a worker publishes) is ``inference.streams``."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from django.http import StreamingHttpResponse

from core import crypto
from core.errors import RateLimited
from inference import streams
from inference.models import FINAL_STATUSES, GenerationJob

logger = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 15
# How long one XREAD waits for new text: below redis-py's 5-second socket timeout, which would
# otherwise end every longer wait with an error and a new connection.
REDIS_BLOCK_SECONDS = 4
# With Redis unreachable a stream reads the job from the database instead, this often at most.
DATABASE_POLL_SECONDS = 1.5
# A stream renews its slot while it runs; a slot whose process died frees itself after this.
STREAM_LEASE_SECONDS = 60
REDIS_TIMEOUT_SECONDS = 2  # a slot check never holds a request longer than this
KEEPALIVE_COMMENT = ": keep-alive\n\n"  # an SSE comment: keeps proxies from closing a quiet stream


def sse_event(name: str, data: dict) -> str:
    """One named server-sent event (the dashboard's and the REST API's streams)."""
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


def sse_data(data: dict | str) -> str:
    """One unnamed server-sent event, as the OpenAI streaming protocol sends them."""
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


async def release_database() -> None:
    # The stream may stay open for minutes: give the connection back now, not at the end.
    await sync_to_async(close_old_connections)()


def _job_with_texts(job_id) -> GenerationJob:
    job = GenerationJob.objects.get(pk=job_id)
    job.output_text  # opened here, where the data key may be read from the database  # noqa: B018
    return job


async def _reload(job_id) -> GenerationJob:
    job = await sync_to_async(_job_with_texts)(job_id)
    await release_database()
    return job


async def _delta_text(job: GenerationJob, value: str) -> str:
    """A delta from the stream, opened; the first of a key reads it from the database. One that
    no longer opens (its key was retired and deleted meanwhile) is skipped: the final text, from
    the database, fills the gap at the end."""
    try:
        key_id = streams.delta_key_id(value)
        if not crypto.data_key_cached(key_id):
            await sync_to_async(crypto.data_key_load)(key_id)
            await release_database()
        return streams.delta_open(job, value)
    except crypto.Undecryptable:
        logger.warning("job %s: a streamed delta does not open; the final text will cover it", job.id)
        return ""


async def follow_job(job: GenerationJob) -> AsyncIterator[tuple[str, object]]:
    """A job's life as it happens, read from its Redis stream without holding a database
    connection or a thread: ("status", str), ("snapshot", text so far), ("delta", new text),
    ("reset", None) when a dead worker's job starts over, ("keepalive", None), and last
    ("end", the final job as the database recorded it). Without Redis it reads the job's row
    every DATABASE_POLL_SECONDS instead, and ends when the row does."""
    if job.status in FINAL_STATUSES:
        yield "end", job
        return
    redis = streams.async_client()
    key = streams.stream_key(job.id)
    yield "status", job.status
    status = job.status
    last_id = "0"
    first = True
    kept_alive = checked = time.monotonic()
    # Until Redis answers, wait on it only briefly: it may be down, or gone without a word (a
    # read that never returns), and the row in the database is the record either way.
    redis_answers = False
    while True:
        block = REDIS_BLOCK_SECONDS if redis_answers else DATABASE_POLL_SECONDS
        asked = time.monotonic()
        try:
            reply = await asyncio.wait_for(
                redis.xread({key: last_id}, block=int(block * 1000), count=1000), block + REDIS_TIMEOUT_SECONDS
            )
            redis_answers = True
        except Exception:
            reply, redis_answers = None, False
            await asyncio.sleep(max(0.0, DATABASE_POLL_SECONDS - (time.monotonic() - asked)))  # never a busy loop
        entries = reply[0][1] if reply else []
        if not entries:
            # The row says whether the job ended without a word in Redis (Redis down, or its end
            # never published): read it at every poll while Redis is silent, else now and then.
            if not redis_answers or time.monotonic() - checked >= KEEPALIVE_SECONDS:
                checked = time.monotonic()
                job = await _reload(job.id)
                if job.status in FINAL_STATUSES:
                    yield "end", job
                    return
            if time.monotonic() - kept_alive >= KEEPALIVE_SECONDS:
                kept_alive = time.monotonic()
                yield "keepalive", None
            continue
        deltas: list[str] = []
        for entry_id, fields in entries:
            last_id = entry_id
            kind = fields.get("event")
            if kind == "start":
                if int(fields.get("attempt", 1)) > 1:
                    deltas = []
                    yield "reset", None
                if status != "running":
                    status = "running"
                    yield "status", status
            elif kind == "delta":
                deltas.append(await _delta_text(job, fields["text"]))
            elif kind == "end":
                if deltas:
                    yield "delta", "".join(deltas)
                yield "end", await _reload(job.id)
                return
        if deltas:
            yield ("snapshot" if first else "delta"), "".join(deltas)
        first = False


async def final_job(job: GenerationJob) -> GenerationJob:
    """Wait (holding no thread or database connection) until the job ends; the job as it ended."""
    async for kind, data in follow_job(job):
        if kind == "end":
            return data
    return job


async def job_events(job: GenerationJob) -> AsyncIterator[str]:
    """Server-sent events: the text so far, then each new piece, then one final event with the
    status and token counts (and the full text, if the stream missed any of it)."""
    sent = ""
    async for kind, data in follow_job(job):
        if kind == "keepalive":
            yield KEEPALIVE_COMMENT
        elif kind == "status":
            yield sse_event("status", {"status": data})
        elif kind == "reset":
            sent = ""
            yield sse_event("reset", {})
        elif kind == "snapshot":
            sent = data
            yield sse_event("snapshot", {"text": data})
        elif kind == "delta":
            sent += data
            yield sse_event("delta", {"text": data})
        elif kind == "end":
            if data.output_text != sent:
                yield sse_event("snapshot", {"text": data.output_text})
            yield sse_event("end", streams.end_payload(data))


# --- how many streams one user holds --------------------------------------------------------------

# Drop the expired leases, count the rest, take one if there is room: one atomic step, so two
# processes can never both take the last slot.
_TAKE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


class StreamSlot:
    """One of the user's MAX_STREAMS_PER_USER open event streams: a member of a Redis sorted set
    per user, scored with the time its lease runs out, shared by every web process. The stream
    renews the lease as it runs and removes it when it ends, whatever ends it; a process that
    dies mid-stream leaves a lease that expires on its own."""

    def __init__(self, key: str, member: str | None) -> None:
        self.key = key
        self.member = member  # None: Redis was unreachable and the stream runs without a slot

    @classmethod
    async def take(cls, user_id) -> StreamSlot | None:
        """A slot, or None when all of the user's are taken. Without Redis the stream is allowed:
        the record is PostgreSQL, and the stream reads it there."""
        key, member, now = f"inkwell:streams:{user_id}", uuid.uuid4().hex, time.time()
        try:
            taken = await asyncio.wait_for(
                streams.async_client().eval(
                    _TAKE_SLOT, 1, key, now, now + STREAM_LEASE_SECONDS, settings.MAX_STREAMS_PER_USER, member,
                    STREAM_LEASE_SECONDS * 2,
                ),
                REDIS_TIMEOUT_SECONDS,
            )  # fmt: skip
        except Exception:
            logger.warning("stream slots unavailable; stream allowed", exc_info=True)
            return cls(key, None)
        return cls(key, member) if taken else None

    async def _call(self, method: str, *args) -> None:
        if self.member is None:
            return
        try:
            await asyncio.wait_for(getattr(streams.async_client(), method)(self.key, *args), REDIS_TIMEOUT_SECONDS)
        except Exception:  # the lease runs out on its own
            logger.warning("could not %s stream slot %s", method, self.member, exc_info=True)

    async def renew(self) -> None:
        await self._call("zadd", {self.member: time.time() + STREAM_LEASE_SECONDS}, xx=True)

    async def release(self) -> None:
        await self._call("zrem", self.member)


def too_many_streams() -> RateLimited:
    limit = settings.MAX_STREAMS_PER_USER
    return RateLimited(
        f"You have {limit} event streams open, the most one account may hold at once. "
        "Close one (or let it end) and try again.",
        code="too_many_streams",
        extra={"retry_after": 5},
    )


async def holding(slot: StreamSlot, events: AsyncIterator[str]) -> AsyncIterator[str]:
    """The stream's events, sent while it holds ``slot``: renewed as it goes, given back when the
    job ends, the client goes away (the server cancels the stream) or anything else stops it."""
    renew_at = time.monotonic() + STREAM_LEASE_SECONDS / 3
    try:
        async with aclosing(events):
            async for event in events:
                if time.monotonic() >= renew_at:
                    renew_at = time.monotonic() + STREAM_LEASE_SECONDS / 3
                    await slot.renew()
                yield event
    finally:
        await slot.release()


def event_stream_response(events: AsyncIterator[str]) -> StreamingHttpResponse:
    """The HTTP response that sends ``events`` as they come (give it ``holding(slot, ...)``)."""
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # tell nginx not to buffer the stream
    return response
