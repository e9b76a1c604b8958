"""Every write of the inference app: submitting, claiming, finishing, cancelling and sweeping jobs."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.crypto import salted_hmac

from accounts.models import Membership
from billing.models import Plan, QuotaPeriod, UsageRecord
from billing.selectors import Entitlements, entitlements_for
from billing.services.ledger import quota_period_open, quota_reserve, quota_settle
from core.errors import ApplicationError, RateLimited
from core.fields import sealed_values
from inference import catalog, streams
from inference.broker import broker_epoch
from inference.engine import MIN_TEMPERATURE
from inference.models import (
    ACTIVE_STATUSES,
    FinishReason,
    GenerationJob,
    JobSource,
    JobStatus,
    Worker,
)
from inference.outcome import JobOutcome
from inference.selectors import jobs_of, workers_alive

logger = logging.getLogger(__name__)

# The generation task (inference/tasks.py), sent by its name: this module never imports the tasks,
# which import it.
RUN_GENERATION_TASK = "inference.run_generation"

MAX_STOP_SEQUENCES = 4
MAX_STOP_LENGTH = 64
MAX_PROMPT_CHARS = 200_000  # far above any plan's token limit; stops absurd payloads before tokenizing
CHAT_ROLES = ("system", "user", "assistant")
# Below this a temperature only divides the logits by a denormal (and can overflow them to inf
# for the whole batch); it means "greedy" (the engine's own rule), so it is stored as 0.
GREEDY_BELOW_TEMPERATURE = MIN_TEMPERATURE
MAX_SEED = 2**63 - 1


# --- workers -------------------------------------------------------------------------------


def worker_heartbeat(*, name: str, hostname: str, pid: int, queues: list[str]) -> Worker:
    now = timezone.now()
    worker, _ = Worker.objects.update_or_create(
        name=name,
        defaults={"hostname": hostname, "pid": pid, "queues": queues, "last_heartbeat_at": now},
        create_defaults={
            "hostname": hostname,
            "pid": pid,
            "queues": queues,
            "started_at": now,
            "last_heartbeat_at": now,
        },
    )
    return worker


def worker_stop(*, name: str) -> None:
    Worker.objects.filter(name=name).delete()


# --- submitting ------------------------------------------------------------------------------


def _invalid(message: str, param: str) -> ApplicationError:
    return ApplicationError(message, code="invalid_request", param=param)


def _shown(value: float) -> str:
    # An int may be far too large for a float (JSON allows 400 digits): never convert it.
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 64 else f"an integer of {value.bit_length()} bits"
    return f"{value:g}"


def _kind_of(value) -> str:
    kinds = {bool: "true/false", str: "a string", float: "a fraction", list: "a list", dict: "an object"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def _check_number(name: str, value, *, low: float, high: float, integer: bool = False) -> None:
    kind = "an integer" if integer else "a number"
    bounds = f"between {_shown(int(low) if integer else low)} and {_shown(int(high) if integer else high)}"
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        raise _invalid(f"{name} must be {kind} {bounds}; got {_kind_of(value)}.", name)
    if (isinstance(value, float) and not math.isfinite(value)) or not low <= value <= high:
        raise _invalid(f"{name} must be {bounds}; got {_shown(value)}.", name)


def _encodes_as_utf8(text: str) -> bool:
    # Only a surrogate (JSON's "\\ud800" on its own) makes a str fail to encode as UTF-8.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_text(text: str, param: str) -> None:
    """Text that PostgreSQL and the tokenizers can take, or a clear error about ``param``."""
    if "\x00" in text:
        raise _invalid(f"{param} contains a NUL character (\\u0000); remove it.", param)
    if not text.isascii() and not _encodes_as_utf8(text):
        raise _invalid(f"{param} contains invalid Unicode (a lone surrogate); send text as UTF-8.", param)


def _validate_messages(messages) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages must be a non-empty list of {role, content} turns.", "messages")
    clean = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in CHAT_ROLES:
            raise _invalid(f"messages[{index}].role must be one of {', '.join(CHAT_ROLES)}.", f"messages[{index}].role")
        content = message.get("content")
        if not isinstance(content, str):
            raise _invalid(f"messages[{index}].content must be a string.", f"messages[{index}].content")
        _check_text(content, f"messages[{index}].content")
        clean.append({"role": message["role"], "content": content})
    if not any(m["content"].strip() for m in clean):
        raise _invalid("The conversation is empty: write a message first.", "messages")
    if sum(len(m["content"]) for m in clean) > MAX_PROMPT_CHARS:
        raise _invalid(f"The conversation is longer than {MAX_PROMPT_CHARS:,} characters.", "messages")
    return clean


def _validate_stop(stop) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise _invalid("stop must be a string or a list of strings.", "stop")
    stop = [s for s in stop if s]
    if len(stop) > MAX_STOP_SEQUENCES:
        raise _invalid(f"At most {MAX_STOP_SEQUENCES} stop sequences are allowed.", "stop")
    if any(len(s) > MAX_STOP_LENGTH for s in stop):
        raise _invalid(f"A stop sequence may be at most {MAX_STOP_LENGTH} characters long.", "stop")
    for sequence in stop:
        _check_text(sequence, "stop")
    return stop


def _rate_limit_key(workspace) -> str:
    return f"inkwell:rpm:ws{workspace.pk}:{int(time.time() // 60)}"


def rate_limit_status(workspace, per_minute: int) -> dict[str, str]:
    """The x-ratelimit-* headers: this minute's requests of the workspace against its plan's limit."""
    try:
        used = int(streams.client().get(_rate_limit_key(workspace)) or 0)
    except Exception:
        used = 0
    return {
        "x-ratelimit-limit-requests": str(per_minute),
        "x-ratelimit-remaining-requests": str(max(0, per_minute - used)),
        "x-ratelimit-reset-requests": f"{streams.seconds_left_in_minute()}s",
    }


def _rate_limit(workspace, per_minute: int) -> None:
    """A fixed one-minute window in Redis (one atomic INCR), shared by every web process."""
    try:
        count = streams.minute_window_count(_rate_limit_key(workspace))
    except Exception:  # the record is PostgreSQL; a Redis hiccup must not refuse paid work
        logger.warning("rate limiter unavailable; request allowed", exc_info=True)
        return
    if count > per_minute:
        retry = streams.seconds_left_in_minute()
        raise RateLimited(
            f"Too many requests: your plan allows {per_minute} generation requests per minute. Try again in {retry} s.",
            code="rate_limit_exceeded",
            extra={"retry_after": retry},
        )


def request_hash_of(params: dict) -> str:
    """A fingerprint of a request's parameters: a retry (same Idempotency-Key, same request) has
    the same one, a key reused for another request does not."""
    # Keyed: the parameters hold the prompt, and a plain hash in a database dump would confirm a guess.
    payload = json.dumps(params, sort_keys=True, default=str)
    return salted_hmac("inkwell.request_hash", payload, algorithm="sha256").hexdigest()


def _replayed(job: GenerationJob, request_hash: str) -> GenerationJob:
    """The job an Idempotency-Key already made, returned again; refused if the key now comes with
    another request."""
    if job.request_hash != request_hash:
        raise ApplicationError(
            "This Idempotency-Key was used with a different request body; use a new key for a new request.",
            code="idempotency_key_reused",
            status_code=422,
        )
    job.replayed = True
    return job


def job_submit(
    *,
    member: Membership,
    model: str | None = None,
    prompt: str | None = None,
    messages: list[dict] | None = None,
    max_new_tokens: int | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    repetition_penalty: float = 1.0,
    stop: list[str] | str | None = None,
    seed: int | None = None,
    source: str = JobSource.WEB,
    idempotency_key: str = "",
    request_hash: str = "",
    entitlements: Entitlements | None = None,
) -> GenerationJob:
    """Check the request against the workspace's plan, its pool and the member's cap, reserve its
    tokens, queue it. ``member`` is who asks, in which workspace.

    Everything that can be refused is refused before anything is written; the reservation, the
    concurrency check and the insert are one transaction; the task is sent after the commit.

    With an ``idempotency_key``, a request already accepted under that key (``request_hash`` says
    whether it is the same request: ``request_hash_of``) returns its job again, with
    ``job.replayed`` set, and changes nothing; the same key with another request is refused (422).
    """
    workspace, user = member.workspace, member.user
    if idempotency_key:
        # Before any check: a retry of an accepted request is answered as it was, not judged again.
        existing = jobs_of(member).filter(idempotency_key=idempotency_key).first()
        if existing is not None:
            return _replayed(existing, request_hash)
    entitlements = entitlements or entitlements_for(workspace)
    if model is None or model == "":
        available = catalog.runnable_models(entitlements)
        if not available:
            raise ApplicationError("Your plan includes no model that this server runs.", code="model_not_allowed")
        model = available[0]
    if not isinstance(model, str):
        raise _invalid(
            f"model must be a string, the name of one of your plan's models; got {_kind_of(model)}.", "model"
        )
    _check_text(model, "model")
    if model not in settings.INFERENCE_MODELS:
        raise ApplicationError(
            f"Unknown model {model!r}. Available models: {', '.join(settings.INFERENCE_MODELS)}.",
            code="model_not_found",
            param="model",
            status_code=404,
        )
    if model not in entitlements.allowed_models:
        raise ApplicationError(
            f"Your plan ({entitlements.plan.name}) does not include the model {model!r}; it includes "
            f"{', '.join(entitlements.allowed_models) or 'no models'}. Upgrade to use it.",
            code="model_not_allowed",
            param="model",
            status_code=403,
        )

    if (prompt is None) == (messages is None):
        raise _invalid("Send either a prompt or chat messages, not both.", "prompt")
    if messages is not None:
        messages = _validate_messages(messages)
        if not catalog.has_chat_template(model):
            raise _invalid(f"The model {model!r} has no chat template; send a plain prompt instead.", "messages")
    else:
        if not isinstance(prompt, str):
            raise _invalid("prompt must be a string.", "prompt")
        if not prompt.strip():
            raise _invalid("The prompt is empty: write something to continue.", "prompt")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise _invalid(f"The prompt is longer than {MAX_PROMPT_CHARS:,} characters.", "prompt")
        _check_text(prompt, "prompt")

    cap = entitlements.max_new_tokens
    if max_new_tokens is None:
        max_new_tokens = min(cap, 256)
    _check_number("max_new_tokens", max_new_tokens, low=1, high=cap, integer=True)
    _check_number("temperature", temperature, low=0, high=2)
    if temperature < GREEDY_BELOW_TEMPERATURE:
        temperature = 0.0  # greedy; also turns -0.0 and a denormal like 1e-45 into the plain 0 the engine expects
    _check_number("top_p", top_p, low=0.01, high=1)
    _check_number("top_k", top_k, low=0, high=1000, integer=True)
    _check_number("repetition_penalty", repetition_penalty, low=0.5, high=2)
    if seed is not None:
        _check_number("seed", seed, low=0, high=MAX_SEED, integer=True)
    stop = _validate_stop(stop)

    prompt_tokens = len(catalog.prompt_token_ids(model, prompt=prompt, messages=messages))
    if prompt_tokens > entitlements.max_prompt_tokens:
        raise _invalid(
            f"The prompt is {prompt_tokens:,} tokens; your plan allows {entitlements.max_prompt_tokens:,} per job. "
            "Shorten it or upgrade your plan.",
            "messages" if messages is not None else "prompt",
        )
    context = catalog.max_context(model)
    if prompt_tokens + max_new_tokens > context:
        raise _invalid(
            f"The prompt ({prompt_tokens:,} tokens) plus max_new_tokens ({max_new_tokens:,}) is more than the "
            f"{context:,}-token context of {model!r}. Lower max_new_tokens to {max(context - prompt_tokens, 0):,} "
            "or shorten the prompt.",
            "max_new_tokens",
        )
    _rate_limit(workspace, entitlements.requests_per_minute)

    tokens = prompt_tokens + max_new_tokens
    try:
        with transaction.atomic():
            period = quota_period_open(workspace=workspace, entitlements=entitlements)
            # Lock the ledger row: concurrent submits in one workspace are serialised from here on,
            # so neither the concurrency count nor a member's cap can be raced past.
            QuotaPeriod.objects.select_for_update().get(pk=period.pk)
            # The membership as it is now, under the lock: a member removed or re-capped a moment
            # ago is judged by what is true, not by what this request read at its start.
            current = Membership.objects.filter(pk=member.pk).values_list("monthly_token_cap", flat=True)
            if not current:
                raise ApplicationError(
                    f"You are no longer a member of {workspace.name}.", code="not_a_member", status_code=403
                )
            active = GenerationJob.objects.filter(workspace=workspace, status__in=ACTIVE_STATUSES).count()
            if active >= entitlements.max_concurrent_jobs:
                raise RateLimited(
                    f"This workspace has {active} jobs queued or running; its plan allows "
                    f"{entitlements.max_concurrent_jobs} at once. Wait for one to finish or cancel one.",
                    code="concurrency_limit_exceeded",
                )
            quota_reserve(period=period, tokens=tokens, user=user, cap=current[0])
            job = GenerationJob.objects.create(
                user=user,
                workspace=workspace,
                source=source,
                model=model,
                prompt=prompt or "",
                messages=messages,
                max_new_tokens=max_new_tokens,
                temperature=float(temperature),
                top_p=float(top_p),
                top_k=top_k,
                repetition_penalty=float(repetition_penalty),
                stop=stop,
                seed=seed,
                prompt_tokens=prompt_tokens,
                quota_period=period,
                tokens_reserved=tokens,
                queue=entitlements.queue,
                plan_slug=entitlements.plan.slug,
                idempotency_key=idempotency_key,
                request_hash=request_hash,
                enqueued_at=timezone.now(),
            )
            transaction.on_commit(lambda: job_enqueue(job_id=job.id, queue=job.queue), robust=True)
    except IntegrityError:
        if not idempotency_key:
            raise
        # The same key arrived twice at once, or its job was deleted (jobs_of hides those): the
        # job that holds the key answers.
        return _replayed(
            GenerationJob.objects.get(workspace=workspace, user=user, idempotency_key=idempotency_key), request_hash
        )
    return job


def job_enqueue(*, job_id, queue: str) -> None:
    """Send the task. The row says when it was sent (set at insert, so the happy path writes
    nothing more); if sending fails, the mark is cleared and the sweeper sends it again."""
    try:
        current_app.send_task(RUN_GENERATION_TASK, args=[str(job_id)], queue=queue, ignore_result=True)
    except Exception:
        GenerationJob.objects.filter(pk=job_id, status=JobStatus.QUEUED).update(enqueued_at=None)
        raise


# --- running -------------------------------------------------------------------------------------


def job_claim(*, job_id, worker: str) -> GenerationJob | None:
    """queued -> running, for exactly one worker. None: someone else has it, or it is over."""
    claimed = GenerationJob.objects.filter(pk=job_id, status=JobStatus.QUEUED).update(
        status=JobStatus.RUNNING, worker=worker, started_at=timezone.now(), attempts=F("attempts") + 1
    )
    if not claimed:
        return None
    return GenerationJob.objects.get(pk=job_id)


def _close(job: GenerationJob, *, from_status: str, guard: Q, status: str, charged: int, **fields) -> bool:
    """Move a job to a final status and settle its quota in one transaction, exactly once: the
    conditional update either wins (and settles) or changes nothing."""
    now = timezone.now()
    with transaction.atomic():
        closed = GenerationJob.objects.filter(guard, pk=job.pk, status=from_status).update(
            status=status, tokens_charged=charged, finished_at=now, **fields
        )
        if not closed:
            return False
        quota_settle(period_id=job.quota_period_id, user_id=job.user_id, reserved=job.tokens_reserved, charged=charged)
        job.refresh_from_db()
        started = job.started_at or now
        UsageRecord.objects.create(
            user_id=job.user_id,
            workspace_id=job.workspace_id,
            job=job,
            quota_period_id=job.quota_period_id,
            plan_slug=job.plan_slug,
            model=job.model,
            status=status,
            prompt_tokens=job.prompt_tokens,
            completion_tokens=job.completion_tokens,
            tokens_charged=charged,
            queue_wait_ms=max(0, int((started - job.created_at).total_seconds() * 1000)),
            run_ms=max(0, int((now - started).total_seconds() * 1000)) if job.started_at else 0,
            worker=job.worker,
        )
        transaction.on_commit(lambda: streams.publish_end(job), robust=True)
    return True


def tokens_charged_for(*, job: GenerationJob, status: str, completion_tokens: int) -> int:
    """Text delivered is text charged (Invariant 8): a job that produced any token is charged its
    prompt and every token produced, whatever its final status, because the user received them
    (streamed, shown, stored or returned). A job that failed before producing anything failed
    through the server's fault and costs nothing. A cancelled job pays for its prompt."""
    if status == JobStatus.FAILED and completion_tokens == 0:
        return 0
    return job.prompt_tokens + completion_tokens


def job_finish(*, job: GenerationJob, outcome: JobOutcome) -> bool:
    """The worker that claimed ``job`` records how it ended. False: the job is no longer this
    worker's (the sweeper took it back), and nothing was written."""
    status = outcome.status
    return _close(
        job,
        from_status=JobStatus.RUNNING,
        guard=Q(worker=job.worker, attempts=job.attempts),
        status=status,
        charged=tokens_charged_for(job=job, status=status, completion_tokens=outcome.completion_tokens),
        **sealed_values(job, output_text=outcome.text),
        completion_tokens=outcome.completion_tokens,
        finish_reason=outcome.finish_reason,
        error_message=outcome.error,
    )


def job_cancel(*, job: GenerationJob) -> GenerationJob:
    """Cancel a job of the caller's. Queued: cancelled now, reservation released. Running: the
    worker stops it within one decoding step, keeps the partial text and charges what was
    generated. Finished: nothing changes."""
    cancelled_now = _close(
        job,
        from_status=JobStatus.QUEUED,
        guard=Q(),
        status=JobStatus.CANCELLED,
        charged=0,
        finish_reason=FinishReason.CANCELLED,
        cancel_requested_at=timezone.now(),
    )
    if not cancelled_now:
        requested = GenerationJob.objects.filter(
            pk=job.pk, status=JobStatus.RUNNING, cancel_requested_at__isnull=True
        ).update(cancel_requested_at=timezone.now())
        if requested:
            try:
                streams.publish_cancel(job.pk)
            except Exception:  # the worker also polls the row, so the cancel still lands
                logger.warning("could not publish cancel for %s", job.pk, exc_info=True)
    job.refresh_from_db()
    return job


def jobs_stop(*, user=None, workspace=None) -> int:
    """Cancel the queued and running jobs of ``user`` (account deletion, suspension), of ``user``
    in ``workspace`` (the member was removed from it), or of everyone in ``workspace`` (it is being
    deleted); each is settled like a cancel by the user. Returns how many were asked to stop."""
    if user is None and workspace is None:
        raise ValueError("jobs_stop needs a user, a workspace, or both")
    jobs = GenerationJob.objects.filter(status__in=ACTIVE_STATUSES)
    if user is not None:
        jobs = jobs.filter(user=user)
    if workspace is not None:
        jobs = jobs.filter(workspace=workspace)
    jobs = list(jobs)
    for job in jobs:
        job_cancel(job=job)
    return len(jobs)


# --- the sweeper ----------------------------------------------------------------------------------


@dataclass
class SweepReport:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    broker_down: bool = False

    def __str__(self) -> str:
        return (
            f"requeued {len(self.requeued)}, failed {len(self.failed)}, cancelled {len(self.cancelled)}, "
            f"resent {len(self.resent)}" + (", broker unreachable" if self.broker_down else "")
        )


def jobs_sweep() -> SweepReport:
    """Take back what dead workers held and resend what the broker may have lost. Safe to run at
    any time, from any number of places: every move is a conditional update."""
    report = SweepReport()
    now = timezone.now()
    alive = set(workers_alive().values_list("name", flat=True))
    stale_after = now - timedelta(seconds=settings.WORKER_STALE_SECONDS)
    overdue = now - timedelta(seconds=settings.JOB_HARD_TIME_LIMIT + settings.WORKER_STALE_SECONDS)
    running = GenerationJob.objects.filter(status=JobStatus.RUNNING).filter(
        Q(started_at__lt=stale_after) & (~Q(worker__in=alive) | Q(started_at__lt=overdue))
    )
    for job in running:
        guard = Q(worker=job.worker, attempts=job.attempts)
        if job.cancel_requested_at is not None:
            # The user stopped it and its worker died before saying so: do not run it again.
            if _close(
                job, from_status=JobStatus.RUNNING, guard=guard, status=JobStatus.CANCELLED, charged=0,
                finish_reason=FinishReason.CANCELLED,
                error_message="Stopped; the text was lost with its worker, so nothing was charged.",
            ):  # fmt: skip
                report.cancelled.append(str(job.pk))
            continue
        if job.attempts >= settings.JOB_MAX_ATTEMPTS:
            message = (
                f"The job stopped its worker {job.attempts} times and was given up. Your quota was not charged for it."
            )
            if _close(
                job,
                from_status=JobStatus.RUNNING,
                guard=guard,
                status=JobStatus.FAILED,
                charged=0,
                finish_reason=FinishReason.ERROR,
                error_message=message,
            ):
                report.failed.append(str(job.pk))
            continue
        with transaction.atomic():
            requeued = GenerationJob.objects.filter(guard, pk=job.pk, status=JobStatus.RUNNING).update(
                status=JobStatus.QUEUED, worker="", started_at=None, enqueued_at=now
            )
            if requeued:
                transaction.on_commit(lambda job=job: job_enqueue(job_id=job.pk, queue=job.queue), robust=True)
                report.requeued.append(str(job.pk))
    # A worker that died held the messages it had taken but not started: the broker gives them back
    # only after its visibility timeout (half an hour), so every queued job is sent again now (a
    # duplicate does nothing). Its row goes once that is done.
    dead = list(Worker.objects.filter(last_heartbeat_at__lt=stale_after).values_list("pk", flat=True))
    if _resend_lost(report, now, worker_died=bool(dead)):
        Worker.objects.filter(pk__in=dead).delete()
    Worker.objects.filter(last_heartbeat_at__lt=now - timedelta(days=1)).delete()
    return report


def _resend_lost(report: SweepReport, now, *, worker_died: bool = False) -> bool:
    """Send again the queued jobs whose message the broker may have lost: never sent (the broker
    was down at submit), sent to a broker that has since restarted empty, or simply waiting too
    long. A duplicate message is harmless (the claim is conditional). With the broker down there
    is nothing to do until it is back; the next sweep tries again."""
    epoch = broker_epoch()
    if epoch is None:
        report.broker_down = True
        return False
    lost = Q(enqueued_at__isnull=True)  # its send failed (the submit stamps the row at insert)
    lost |= Q(enqueued_at__lt=now - timedelta(seconds=settings.JOB_REQUEUE_AFTER_SECONDS))
    lost |= Q(enqueued_at__lt=epoch)
    if worker_died:
        lost |= Q(enqueued_at__lt=now)
    lost = GenerationJob.objects.filter(status=JobStatus.QUEUED).filter(lost)
    for job in lost.only("pk", "queue"):
        # Stamped after the epoch was read, so the next sweep does not take it for lost again.
        GenerationJob.objects.filter(pk=job.pk, status=JobStatus.QUEUED).update(enqueued_at=timezone.now())
        try:
            job_enqueue(job_id=job.pk, queue=job.queue)
        except Exception:  # the broker went away mid-sweep; job_enqueue cleared the mark
            logger.warning("could not resend job %s; the next sweep tries again", job.pk, exc_info=True)
            report.broker_down = True
            return False
        report.resent.append(str(job.pk))
    return True


def job_delete(*, job: GenerationJob) -> GenerationJob:
    """Erase a finished job's texts; its token counts and usage record stay (they are billing)."""
    if not job.is_final:
        raise ApplicationError("Stop the job before deleting it.", code="job_running", status_code=409)
    GenerationJob.objects.filter(pk=job.pk).update(
        prompt=None, messages=None, output_text=None, stop=None, deleted_at=timezone.now()
    )
    job.refresh_from_db()
    return job


def job_texts_erase_expired(*, now=None) -> int:
    """Erase the texts of finished jobs older than their plan's retention; counts stay. Returns
    how many jobs were erased."""
    now = now or timezone.now()
    erased = 0
    for plan in Plan.objects.filter(retention_days__isnull=False):
        cutoff = now - timedelta(days=plan.retention_days)
        erased += GenerationJob.objects.filter(
            plan_slug=plan.slug, finished_at__lt=cutoff, texts_erased_at__isnull=True
        ).update(prompt=None, messages=None, output_text=None, stop=None, texts_erased_at=now)
    return erased
