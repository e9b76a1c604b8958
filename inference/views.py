from __future__ import annotations

import asyncio
import csv
import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import close_old_connections
from django.http import Http404, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from billing.selectors import entitlements_for
from inference import catalog, streams
from inference.forms import GenerateForm
from inference.models import FINAL_STATUSES, GenerationJob, JobSource, JobStatus
from inference.selectors import (
    job_history,
    job_of_async,
    jobs_of,
    queue_position,
    queue_wait_estimate_seconds,
    usage_by_day,
    usage_by_model,
    usage_records,
)
from inference.services import job_cancel, job_delete, job_submit
from saas.charts import bar_chart
from saas.errors import ApplicationError

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


async def follow_job(job: GenerationJob) -> AsyncIterator[tuple[str, object]]:
    """A job's life as it happens, read from its Redis stream without holding a database
    connection or a thread: ("status", str), ("snapshot", text so far), ("delta", new text),
    ("reset", None) when a dead worker's job starts over, ("keepalive", None), and last
    ("end", the final job as the database recorded it)."""
    if job.status in FINAL_STATUSES:
        yield "end", job
        return
    redis = streams.async_client()
    key = streams.stream_key(job.id)
    yield "status", job.status
    status = job.status
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
                yield "end", job
                return
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
                deltas.append(fields["text"])
            elif kind == "end":
                if deltas:
                    yield "delta", "".join(deltas)
                yield "end", await _reload(job.id)
                return
        if deltas:
            yield ("snapshot" if first else "delta"), "".join(deltas)
        first = False


async def job_events(job: GenerationJob) -> AsyncIterator[str]:
    """Server-sent events: the text so far, then each new piece, then one final event with the
    status and token counts (and the full text, if the stream missed any of it)."""
    sent = ""
    async for kind, data in follow_job(job):
        if kind == "keepalive":
            yield ": keep-alive\n\n"
        elif kind == "status":
            yield _event("status", {"status": data})
        elif kind == "reset":
            sent = ""
            yield _event("reset", {})
        elif kind == "snapshot":
            sent = data
            yield _event("snapshot", {"text": data})
        elif kind == "delta":
            sent += data
            yield _event("delta", {"text": data})
        elif kind == "end":
            if data.output_text != sent:
                yield _event("snapshot", {"text": data.output_text})
            yield _event("end", streams.end_payload(data))


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


# --- the dashboard: generate, history, job pages ------------------------------------------------------

HISTORY_PAGE_SIZE = 20


def _wants_json(request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _form_for(request, entitlements, data=None, initial=None) -> GenerateForm:
    models = [m for m in entitlements.allowed_models if m in settings.INFERENCE_MODELS]
    return GenerateForm(data, initial=initial, models=models, max_new_tokens=entitlements.max_new_tokens)


def _initial_from(request, entitlements) -> dict:
    """Defaults, or the settings of a job to run again (?from=) or a chat to continue (?continue=)."""
    initial = {"max_new_tokens": min(256, entitlements.max_new_tokens), "mode": "prompt"}
    source_id = request.GET.get("from") or request.GET.get("continue")
    if not source_id:
        return initial
    try:
        source_id = uuid.UUID(source_id)
    except ValueError:
        raise Http404("No such job.") from None
    job = get_object_or_404(jobs_of(request.user), pk=source_id)
    initial.update(
        model=job.model,
        max_new_tokens=min(job.max_new_tokens, entitlements.max_new_tokens),
        temperature=job.temperature,
        top_p=job.top_p,
        top_k=job.top_k,
        repetition_penalty=job.repetition_penalty,
        stop="\n".join(job.stop),
        seed=job.seed,
    )
    if job.messages is None:
        initial.update(mode="prompt", prompt=job.prompt)
        return initial
    turns = [m for m in job.messages if m["role"] != "system"]
    system = next((m["content"] for m in job.messages if m["role"] == "system"), "")
    if "continue" in request.GET:
        turns.append({"role": "assistant", "content": job.output_text})
        message = ""
    else:
        message = turns.pop()["content"] if turns and turns[-1]["role"] == "user" else ""
    initial.update(mode="chat", system=system, history=json.dumps(turns), message=message)
    return initial


@login_required
def generate(request):
    entitlements = entitlements_for(request.user)
    if request.method == "POST":
        form = _form_for(request, entitlements, data=request.POST)
        if form.is_valid():
            try:
                job = job_submit(user=request.user, source=JobSource.WEB, **form.submission())
            except ApplicationError as error:
                form.add_error(form.field_for(error.param), error.message)
            else:
                if _wants_json(request):
                    return JsonResponse(
                        {
                            "id": str(job.pk),
                            "url": reverse("inference:job", args=[job.pk]),
                            "stream_url": reverse("inference:job-stream", args=[job.pk]),
                            "status_url": reverse("inference:job-status", args=[job.pk]),
                            "prompt_tokens": job.prompt_tokens,
                        },
                        status=201,
                    )
                return redirect("inference:job", job.pk)
        if _wants_json(request):
            return JsonResponse({"errors": form.errors.get_json_data()}, status=400)
    else:
        form = _form_for(request, entitlements, initial=_initial_from(request, entitlements))
    history = []
    if form["history"].value():
        try:
            history = json.loads(form["history"].value())
        except (TypeError, ValueError):
            history = []
    chat_models = [m for m, _ in form.fields["model"].choices if catalog.has_chat_template(m)]
    return render(
        request,
        "inference/generate.html",
        {
            "form": form,
            "entitlements": entitlements,
            "chat_models": chat_models,
            "history_turns": history,
            "recent": jobs_of(request.user).order_by("-created_at")[:5],
        },
    )


@login_required
@require_POST
def count_tokens(request):
    """The live prompt counter: tokens as the model's tokenizer counts them, against the plan."""
    entitlements = entitlements_for(request.user)
    model = request.POST.get("model", "")
    if model not in settings.INFERENCE_MODELS or model not in entitlements.allowed_models:
        return JsonResponse({"error": "Pick one of your plan's models."}, status=400)
    if request.POST.get("mode") == "chat":
        messages = []
        if request.POST.get("system", "").strip():
            messages.append({"role": "system", "content": request.POST["system"]})
        try:
            turns = json.loads(request.POST.get("history") or "[]")
            if not isinstance(turns, list) or not all(
                isinstance(t, dict) and isinstance(t.get("role"), str) and isinstance(t.get("content"), str)
                for t in turns
            ):
                raise ValueError
        except ValueError:
            return JsonResponse({"error": "The conversation could not be read."}, status=400)
        messages.extend({"role": t["role"], "content": t["content"]} for t in turns)
        messages.append({"role": "user", "content": request.POST.get("message", "")})
        ids = catalog.prompt_token_ids(model, messages=messages)
    else:
        ids = catalog.prompt_token_ids(model, prompt=request.POST.get("prompt", ""))
    return JsonResponse({"tokens": len(ids), "limit": entitlements.max_prompt_tokens})


def _job_payload(job: GenerationJob) -> dict:
    position = queue_position(job)
    return {
        "id": str(job.pk),
        "status": job.status,
        "text": job.output_text,
        "finish_reason": job.finish_reason,
        "prompt_tokens": job.prompt_tokens,
        "completion_tokens": job.completion_tokens,
        "tokens_charged": job.tokens_charged,
        "error": job.error_message,
        "queue_position": position,
        "wait_estimate_seconds": queue_wait_estimate_seconds(position),
        "run_seconds": (job.finished_at - job.started_at).total_seconds()
        if job.finished_at and job.started_at
        else None,
    }


@login_required
def job_detail(request, job_id):
    job = get_object_or_404(jobs_of(request.user), pk=job_id)
    return render(request, "inference/job.html", {"job": job, "live": _job_payload(job)})


@login_required
def job_status(request, job_id):
    """The polling fallback when the event stream drops."""
    job = get_object_or_404(jobs_of(request.user), pk=job_id)
    return JsonResponse(_job_payload(job))


@login_required
@require_POST
def job_cancel_view(request, job_id):
    job = job_cancel(job=get_object_or_404(jobs_of(request.user), pk=job_id))
    if _wants_json(request):
        return JsonResponse(_job_payload(job))
    messages.info(request, "Stopping: the text so far is kept and only it is charged.")
    return redirect("inference:job", job.pk)


@login_required
@require_POST
def job_delete_view(request, job_id):
    job = get_object_or_404(jobs_of(request.user), pk=job_id)
    try:
        job_delete(job=job)
    except ApplicationError as error:
        messages.error(request, error.message)
        return redirect("inference:job", job.pk)
    messages.success(request, "The job's texts were deleted. Its token counts stay in your usage.")
    return redirect("inference:history")


@login_required
def job_download(request, job_id, extension: str):
    if extension not in ("txt", "md"):
        raise Http404("Downloads are .txt or .md.")
    job = get_object_or_404(jobs_of(request.user), pk=job_id)
    if extension == "md":
        prompt = job.prompt or "\n\n".join(f"**{m['role']}**: {m['content']}" for m in job.messages or [])
        body = (
            f"# Inkwell job {job.pk}\n\n"
            f"- Model: {job.model}\n- Created: {job.created_at:%Y-%m-%d %H:%M} UTC\n"
            f"- Tokens: {job.prompt_tokens} prompt + {job.completion_tokens} completion\n\n"
            f"## Prompt\n\n{prompt}\n\n## Output\n\n{job.output_text}\n"
        )
        content_type = "text/markdown; charset=utf-8"
    else:
        body, content_type = job.output_text, "text/plain; charset=utf-8"
    response = HttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="inkwell-{job.pk}.{extension}"'
    return response


@login_required
def history(request):
    # NUL characters cannot reach PostgreSQL; nobody searches for them on purpose.
    query = request.GET.get("q", "").replace("\x00", "").strip()
    status = request.GET.get("status", "")
    model = request.GET.get("model", "").replace("\x00", "")
    jobs = job_history(
        request.user,
        query=query,
        status=status if status in JobStatus.values else "",
        model=model,
    )
    page = Paginator(jobs, HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    filters = request.GET.copy()
    filters.pop("page", None)
    return render(
        request,
        "inference/history.html",
        {
            "page": page,
            "query": query,
            "status": status,
            "model": model,
            "statuses": JobStatus.choices,
            "models": list(settings.INFERENCE_MODELS),
            "filters": filters.urlencode(),
        },
    )


# --- usage ----------------------------------------------------------------------------------------------


@login_required
def usage(request):
    entitlements = entitlements_for(request.user)
    start, end = entitlements.period_start, entitlements.period_end
    previous_start = start - (end - start)
    current = usage_by_day(request.user, start=start, end=min(end, timezone.now() + timedelta(days=1)))
    previous = usage_by_day(request.user, start=previous_start, end=start)
    return render(
        request,
        "inference/usage.html",
        {
            "entitlements": entitlements,
            "chart": bar_chart(current, previous),
            "current_total": sum(t for _, t in current),
            "previous_total": sum(t for _, t in previous),
            "by_model": usage_by_model(request.user, start=start, end=end),
        },
    )


@login_required
def usage_export(request):
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="inkwell-usage.csv"'
    writer = csv.writer(response)
    writer.writerow(
        ["created_at", "job_id", "model", "status", "prompt_tokens", "completion_tokens", "tokens_charged",
         "queue_wait_ms", "run_ms"]
    )  # fmt: skip
    for record in usage_records(request.user).iterator():
        writer.writerow(
            [record.created_at.isoformat(), record.job_id or "", record.model, record.status, record.prompt_tokens,
             record.completion_tokens, record.tokens_charged, record.queue_wait_ms, record.run_ms]
        )  # fmt: skip
    return response
