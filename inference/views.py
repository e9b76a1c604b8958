from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.db import close_old_connections
from django.http import Http404, StreamingHttpResponse

from inference import streams
from inference.models import FINAL_STATUSES, GenerationJob
from inference.selectors import job_of_async

KEEPALIVE_SECONDS = 15


def _event(name: str, data: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


async def _release_database() -> None:
    # The stream may stay open for minutes: give the connection back now, not at the end.
    await sync_to_async(close_old_connections)()


async def _reload(job_id) -> GenerationJob:
    job = await GenerationJob.objects.aget(pk=job_id)
    await _release_database()
    return job


def _final_events(job: GenerationJob, already_sent: str) -> list[str]:
    events = []
    if job.output_text != already_sent:
        # What the stream missed (or the whole text, if the stream expired): the record wins.
        events.append(_event("snapshot", {"text": job.output_text}))
    events.append(_event("end", streams.end_payload(job)))
    return events


async def job_events(job: GenerationJob) -> AsyncIterator[str]:
    """The text so far, then each new piece, then one final event with status and token counts.
    Holds no database connection and no thread while it waits: it blocks on Redis, asynchronously."""
    if job.status in FINAL_STATUSES:
        for event in _final_events(job, already_sent=""):
            yield event
        return
    redis = streams.async_client()
    key = streams.stream_key(job.id)
    yield _event("status", {"status": job.status})
    status = job.status
    sent = ""
    last_id = "0"
    first = True
    while True:
        try:
            reply = await redis.xread({key: last_id}, block=KEEPALIVE_SECONDS * 1000, count=1000)
        except Exception:
            reply = None
            await asyncio.sleep(1)
        entries = reply[0][1] if reply else []
        if not entries:
            job = await _reload(job.id)
            if job.status in FINAL_STATUSES:
                for event in _final_events(job, sent):
                    yield event
                return
            yield ": keep-alive\n\n"
            continue
        deltas = []
        for entry_id, fields in entries:
            last_id = entry_id
            kind = fields.get("event")
            if kind == "start":
                if int(fields.get("attempt", 1)) > 1 and sent:
                    # The worker died and the job started over on another one.
                    sent, deltas = "", []
                    yield _event("reset", {})
                if status != "running":
                    status = "running"
                    yield _event("status", {"status": status})
            elif kind == "delta":
                deltas.append(fields["text"])
            elif kind == "end":
                if deltas:
                    yield _event("delta", {"text": "".join(deltas)})
                    sent += "".join(deltas)
                    deltas = []
                job = await _reload(job.id)
                for event in _final_events(job, sent):
                    yield event
                return
        if deltas:
            text = "".join(deltas)
            sent += text
            yield _event("snapshot" if first else "delta", {"text": sent if first else text})
        first = False


async def job_stream(request, job_id):
    """GET /jobs/<id>/stream: server-sent events of one of the caller's jobs (404 for others)."""
    user = await request.auser()
    job = await job_of_async(user, job_id) if user.is_authenticated else None
    await _release_database()
    if job is None:
        raise Http404("No such job.")
    response = StreamingHttpResponse(job_events(job), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # tell nginx not to buffer the stream
    return response
