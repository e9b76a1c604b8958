from __future__ import annotations

from datetime import time, timedelta

from django.conf import settings
from django.db.models import Count, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from accounts.models import Membership
from billing.models import UsageRecord
from core.fields import sealed_open
from inference.models import GenerationJob, JobStatus, Worker


def workers_alive() -> QuerySet[Worker]:
    cutoff = timezone.now() - timedelta(seconds=settings.WORKER_STALE_SECONDS)
    return Worker.objects.filter(last_heartbeat_at__gte=cutoff)


def jobs_of(member) -> QuerySet[GenerationJob]:
    """Every read of jobs on behalf of a person starts here, from their membership: their own jobs
    in that workspace. Another member's job, or a job in another workspace, is unreachable (each
    member's history is their own; admins see numbers, not texts, of others)."""
    return GenerationJob.objects.filter(
        workspace_id=member.workspace_id, user_id=member.user_id, deleted_at__isnull=True
    )


def job_ids_of(user) -> list[str]:
    """The ids of every job of ``user``, deleted ones included (account deletion)."""
    return [str(pk) for pk in GenerationJob.objects.filter(user=user).values_list("pk", flat=True)]


def job_ids_in(workspace) -> list[str]:
    """The ids of every job of ``workspace``, deleted ones included (deleting the workspace)."""
    return [str(pk) for pk in GenerationJob.objects.filter(workspace=workspace).values_list("pk", flat=True)]


# Rows decrypted per round trip when searching: bounds the memory a search holds, whatever the history.
SEARCH_BATCH = 1000


def _job_text_matches(pk, workspace_id: int, prompt, messages, output, needle: str) -> bool:
    for name, raw in (("prompt", prompt), ("output_text", output)):
        if (
            raw is not None
            and needle in sealed_open(GenerationJob, name, pk=pk, workspace_id=workspace_id, raw=raw).casefold()
        ):
            return True
    if messages is not None:
        turns = sealed_open(GenerationJob, "messages", pk=pk, workspace_id=workspace_id, raw=messages)
        return any(needle in str(turn.get("content", "")).casefold() for turn in turns)
    return False


def job_ids_matching(jobs: QuerySet[GenerationJob], query: str) -> list:
    """The jobs among ``jobs`` whose prompt, chat turns or output contain ``query`` (any case).

    The texts are sealed, so SQL cannot look inside them: the scan reads the sealed columns in
    batches of SEARCH_BATCH, opens each in this process and keeps the matching ids. Nothing about
    the texts is stored to make this faster (no index of words, which would leak them); the cost
    is measured in bench/search.py (10,000 jobs well under the 300 ms target).
    """
    needle = query.casefold()
    rows = jobs.values_list("pk", "workspace_id", "prompt", "messages", "output_text").order_by()
    return [row[0] for row in rows.iterator(chunk_size=SEARCH_BATCH) if _job_text_matches(*row, needle)]


def job_history(member, *, query: str = "", status: str = "", model: str = "") -> QuerySet[GenerationJob]:
    jobs = jobs_of(member).order_by("-created_at")
    if status:
        jobs = jobs.filter(status=status)
    if model:
        jobs = jobs.filter(model=model)
    if query:
        jobs = jobs.filter(pk__in=job_ids_matching(jobs, query))
    return jobs


def queue_position(job: GenerationJob) -> int | None:
    """How many jobs of the same queue were queued before this one (None once it has started)."""
    if job.status != JobStatus.QUEUED:
        return None
    return GenerationJob.objects.filter(queue=job.queue, status=JobStatus.QUEUED, created_at__lt=job.created_at).count()


def queue_wait_estimate_seconds(position: int | None) -> int | None:
    """A rough wait for a job with ``position`` jobs ahead: the recent median run time, times the
    rounds the live engines need to reach it."""
    if position is None:
        return None
    recent = list(
        UsageRecord.objects.filter(status=JobStatus.SUCCEEDED, run_ms__gt=0)
        .order_by("-created_at")
        .values_list("run_ms", flat=True)[:50]
    )
    typical = sorted(recent)[len(recent) // 2] / 1000 if recent else 5.0
    slots = max(1, workers_alive().count() * settings.ENGINE_MAX_BATCH)
    return int(typical * (1 + position // slots))


def _usage(workspace, user=None) -> QuerySet[UsageRecord]:
    """The workspace's usage records; with ``user``, only that member's."""
    records = UsageRecord.objects.filter(workspace=workspace)
    return records if user is None else records.filter(user=user)


def usage_by_day(workspace, *, user=None, start, end) -> list[tuple]:
    """(day, tokens charged) for every day of [start, end), days without use included: the
    workspace's, or with ``user`` one member's."""
    rows = dict(
        _usage(workspace, user)
        .filter(created_at__gte=start, created_at__lt=end)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(tokens=Sum("tokens_charged"))
        .values_list("day", "tokens")
    )
    days = []
    day = start.date()
    while day < end.date() or (day == end.date() and end.time() != time.min):
        days.append((day, rows.get(day, 0) or 0))
        day += timedelta(days=1)
    return days


def usage_by_model(workspace, *, user=None, start, end) -> list[dict]:
    return list(
        _usage(workspace, user)
        .filter(created_at__gte=start, created_at__lt=end)
        .values("model")
        .annotate(tokens=Sum("tokens_charged"), jobs=Count("id"))
        .order_by("-tokens")
    )


def usage_by_member(workspace, *, start, end) -> list[dict]:
    """Each member's tokens and jobs in [start, end), most first (``user__email``, ``tokens``,
    ``jobs``); people removed since keep their line, their history stays with the workspace."""
    return list(
        _usage(workspace)
        .filter(created_at__gte=start, created_at__lt=end)
        .values("user_id", "user__email")
        .annotate(tokens=Sum("tokens_charged"), jobs=Count("id"))
        .order_by("-tokens", "user__email")
    )


DELETED_ACCOUNT = "(deleted account)"


def member_usage_lines(workspace, *, start, end) -> list[dict]:
    """One line per member (and per former member with usage) for [start, end): email, role
    (blank when gone), tokens, jobs and monthly cap; current members first, most tokens first."""
    used = {row["user_id"]: row for row in usage_by_member(workspace, start=start, end=end)}
    lines = []
    for membership in Membership.objects.select_related("user").filter(workspace=workspace):
        row = used.pop(membership.user_id, None) or {}
        lines.append(
            {
                "user_id": membership.user_id,
                "email": membership.user.email,
                "role": membership.role,
                "tokens": row.get("tokens") or 0,
                "jobs": row.get("jobs") or 0,
                "monthly_token_cap": membership.monthly_token_cap,
            }
        )
    lines.sort(key=lambda line: (-line["tokens"], line["email"]))
    gone = [
        {"user_id": uid, "email": row["user__email"] or DELETED_ACCOUNT, "role": "", "tokens": row["tokens"] or 0,
         "jobs": row["jobs"], "monthly_token_cap": None}
        for uid, row in used.items()
    ]  # fmt: skip
    return lines + gone


def usage_records(workspace, *, user=None) -> QuerySet[UsageRecord]:
    return _usage(workspace, user).select_related("user").order_by("created_at")


async def job_of_async(member, job_id) -> GenerationJob | None:
    return await jobs_of(member).filter(pk=job_id).afirst()
