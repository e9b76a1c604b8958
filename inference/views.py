from __future__ import annotations

import csv
import json
import logging
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts.workspaces import Permission, allows, member_required
from billing.selectors import entitlements_for
from core.charts import bar_chart
from core.errors import ApplicationError
from inference import catalog, streams
from inference.forms import GenerateForm, chat_messages, parse_history
from inference.live import StreamSlot, event_stream_response, holding, job_events, release_database, too_many_streams
from inference.models import GenerationJob, JobSource, JobStatus
from inference.selectors import (
    USAGE_CSV_COLUMNS,
    job_history,
    job_of_async,
    jobs_of,
    member_usage_lines,
    queue_position,
    queue_wait_estimate_seconds,
    usage_by_day,
    usage_by_model,
    usage_csv_row,
    usage_records,
)
from inference.services import MAX_PROMPT_CHARS, job_cancel, job_delete, job_submit

logger = logging.getLogger(__name__)


# --- live output --------------------------------------------------------------------------------------


async def job_stream(request, job_id):
    """GET /jobs/<id>/stream: server-sent events of one of the caller's jobs (404 for others;
    429 past MAX_STREAMS_PER_USER, and the page falls back to polling)."""
    membership = request.membership
    job = await job_of_async(membership, job_id) if membership is not None else None
    await release_database()
    if job is None:
        raise Http404("No such job.")
    slot = await StreamSlot.take(membership.user_id)
    if slot is None:
        error = too_many_streams()
        return HttpResponse(error.message, status=429, content_type="text/plain; charset=utf-8",
                            headers={"Retry-After": "5"})  # fmt: skip
    return event_stream_response(holding(slot, job_events(job)))


# --- the dashboard: generate, history, job pages ------------------------------------------------------

HISTORY_PAGE_SIZE = 20


def _wants_json(request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _form_for(request, entitlements, data=None, initial=None) -> GenerateForm:
    models = catalog.runnable_models(entitlements)
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
    job = get_object_or_404(jobs_of(request.membership), pk=source_id)
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


@member_required()
def generate(request):
    entitlements = entitlements_for(request.membership.workspace)
    if request.method == "POST":
        form = _form_for(request, entitlements, data=request.POST)
        if form.is_valid():
            try:
                job = job_submit(member=request.membership, source=JobSource.WEB, **form.submission())
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
    chat_models = [m for m, _ in form.fields["model"].choices if catalog.has_chat_template(m)]
    return render(
        request,
        "inference/generate.html",
        {
            "form": form,
            "entitlements": entitlements,
            "chat_models": chat_models,
            "history_turns": _history_turns(form),
            "recent": jobs_of(request.membership).order_by("-created_at")[:5],
        },
    )


def _history_turns(form: GenerateForm) -> list[dict]:
    """The conversation to show above the message box: the form's, if it could be read."""
    if form.is_bound:
        return getattr(form, "cleaned_data", {}).get("history") or []
    try:
        return parse_history(form.initial.get("history") or "")
    except ValidationError:
        return []


def _count_allowed(user) -> int | None:
    """None, or the seconds until the user may count again (a one-minute window in Redis,
    shared by every process; without Redis counting is allowed)."""
    try:
        count = streams.minute_window_count(f"inkwell:count-tokens:{user.pk}:{int(time.time() // 60)}")
    except Exception:
        logger.warning("token counter rate limit unavailable; request allowed", exc_info=True)
        return None
    return streams.seconds_left_in_minute() if count > settings.TOKEN_COUNTS_PER_MINUTE else None


@member_required()
@require_POST
def count_tokens(request):
    """The live prompt counter: tokens as the model's tokenizer counts them, against the plan.
    Bounded like a submit (MAX_PROMPT_CHARS) and rate-limited, since tokenizing is real work."""
    retry = _count_allowed(request.user)
    if retry is not None:
        message = f"Counting paused: more than {settings.TOKEN_COUNTS_PER_MINUTE} counts a minute."
        return JsonResponse({"error": message, "retry_after": retry}, status=429, headers={"Retry-After": str(retry)})
    entitlements = entitlements_for(request.membership.workspace)
    model = request.POST.get("model", "")
    if model not in catalog.runnable_models(entitlements):
        return JsonResponse({"error": "Pick one of your plan's models."}, status=400)
    prompt, messages = None, None
    if request.POST.get("mode") == "chat":
        try:
            history = parse_history(request.POST.get("history") or "")
        except ValidationError as error:
            return JsonResponse({"error": error.messages[0]}, status=400)
        messages = chat_messages(
            system=request.POST.get("system", ""), history=history, message=request.POST.get("message", "")
        )
        size = sum(len(m["content"]) for m in messages)
    else:
        prompt = request.POST.get("prompt", "")
        size = len(prompt)
    if size > MAX_PROMPT_CHARS:
        message = f"Too long to count: over {MAX_PROMPT_CHARS:,} characters (a job may not be longer either)."
        return JsonResponse({"error": message, "limit": entitlements.max_prompt_tokens}, status=413)
    ids = catalog.prompt_token_ids(model, prompt=prompt, messages=messages)
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


@member_required()
def job_detail(request, job_id):
    job = get_object_or_404(jobs_of(request.membership), pk=job_id)
    return render(request, "inference/job.html", {"job": job, "live": _job_payload(job)})


@member_required()
def job_status(request, job_id):
    """The polling fallback when the event stream drops."""
    job = get_object_or_404(jobs_of(request.membership), pk=job_id)
    return JsonResponse(_job_payload(job))


@member_required()
@require_POST
def job_cancel_view(request, job_id):
    job = job_cancel(job=get_object_or_404(jobs_of(request.membership), pk=job_id))
    if _wants_json(request):
        return JsonResponse(_job_payload(job))
    messages.info(request, "Stopping: the text so far is kept and only it is charged.")
    return redirect("inference:job", job.pk)


@member_required()
@require_POST
def job_delete_view(request, job_id):
    job = get_object_or_404(jobs_of(request.membership), pk=job_id)
    try:
        job_delete(job=job)
    except ApplicationError as error:
        messages.error(request, error.message)
        return redirect("inference:job", job.pk)
    messages.success(request, "The job's texts were deleted. Its token counts stay in your usage.")
    return redirect("inference:history")


@member_required()
def job_download(request, job_id, extension: str):
    if extension not in ("txt", "md"):
        raise Http404("Downloads are .txt or .md.")
    job = get_object_or_404(jobs_of(request.membership), pk=job_id)
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


@member_required()
def history(request):
    # NUL characters cannot reach PostgreSQL; nobody searches for them on purpose.
    query = request.GET.get("q", "").replace("\x00", "").strip()
    status = request.GET.get("status", "")
    model = request.GET.get("model", "").replace("\x00", "")
    jobs = job_history(
        request.membership,
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


def _usage_scope(membership):
    """Whose usage a page shows: the whole workspace's to owners and admins, one's own to members."""
    return None if allows(membership, Permission.USAGE_ALL) else membership.user


@member_required()
def usage(request):
    membership = request.membership
    workspace, scope = membership.workspace, _usage_scope(membership)
    entitlements = entitlements_for(workspace)
    start, end = entitlements.period_start, entitlements.period_end
    previous_start = start - (end - start)
    current = usage_by_day(workspace, user=scope, start=start, end=min(end, timezone.now() + timedelta(days=1)))
    previous = usage_by_day(workspace, user=scope, start=previous_start, end=start)
    lines = member_usage_lines(workspace, start=start, end=end)
    return render(
        request,
        "inference/usage.html",
        {
            "entitlements": entitlements,
            "chart": bar_chart(current, previous),
            "current_total": sum(t for _, t in current),
            "previous_total": sum(t for _, t in previous),
            "by_model": usage_by_model(workspace, user=scope, start=start, end=end),
            "whole_workspace": scope is None,
            "members": lines if scope is None else [],
            "mine": next(line for line in lines if line["user_id"] == membership.user_id),
        },
    )


@member_required()
def usage_export(request):
    """Every usage record as CSV: the whole workspace's for owners and admins, one's own for
    members; each line names the member who ran the job."""
    membership = request.membership
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="inkwell-usage-{membership.workspace.slug}.csv"'
    writer = csv.writer(response)
    writer.writerow(USAGE_CSV_COLUMNS)
    for record in usage_records(membership.workspace, user=_usage_scope(membership)).iterator():
        writer.writerow(usage_csv_row(record))
    return response
