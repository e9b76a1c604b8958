from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import time, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from accounts.models import Membership
from billing.models import UsageRecord
from core import crypto
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


def _sealed_texts(jobs: QuerySet[GenerationJob]) -> Iterator[tuple]:
    """(pk, prompt, messages, output) of ``jobs``, newest first, as stored (sealed), in batches.
    On PostgreSQL through a server-side cursor in binary: no hex decoding of every value and no
    Django converters, which together cost more than the decryption itself."""
    rows = jobs.values_list("pk", "prompt", "messages", "output_text").order_by("-created_at")
    if connection.vendor != "postgresql":
        yield from rows.iterator(chunk_size=SEARCH_BATCH)
        return
    sql, params = rows.query.sql_with_params()
    connection.ensure_connection()
    with transaction.atomic(), connection.connection.cursor(name=f"search_{uuid.uuid4().hex}", binary=True) as cursor:
        cursor.itersize = SEARCH_BATCH
        cursor.execute(sql, params)
        yield from cursor


def job_ids_matching(jobs: QuerySet[GenerationJob], query: str, *, workspace_id: int) -> list:
    """The ids of the jobs among ``jobs`` (one workspace's) whose prompt, chat turns or output
    contain ``query`` (any case), newest first.

    The texts are sealed, so SQL cannot look inside them: the scan reads the sealed columns in
    batches of SEARCH_BATCH and opens each value in this process. Nothing about the texts is stored
    to make this faster (an index of words would leak them); bench/search.py measures the cost.
    """
    needle = query.casefold()
    opener = crypto.Opener(workspace_id)
    prefix = crypto.aad_prefix(GenerationJob._meta.label_lower)
    found = []
    for pk, prompt, messages, output in _sealed_texts(jobs):
        place = prefix + str(pk).encode() + b"/"
        if (
            (prompt is not None and needle in opener.open(prompt, place + b"prompt").decode().casefold())
            or (output is not None and needle in opener.open(output, place + b"output_text").decode().casefold())
            or (
                messages is not None
                and any(
                    needle in str(turn.get("content", "")).casefold()
                    for turn in json.loads(opener.open(messages, place + b"messages"))
                )
            )
        ):
            found.append(pk)
    return found


class JobSearchResults:
    """The jobs a search found, newest first, as a sequence Django's and DRF's paginators take: its
    length is the number of matches, and a slice loads only that page's rows."""

    def __init__(self, ids: list):
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index):
        if not isinstance(index, slice):
            return self[index : index + 1][0]
        ids = self.ids[index]
        rows = GenerationJob.objects.in_bulk(ids)
        return [rows[pk] for pk in ids if pk in rows]


def job_history(
    member, *, query: str = "", status: str = "", model: str = ""
) -> QuerySet[GenerationJob] | JobSearchResults:
    """A member's jobs, newest first, filtered; with a ``query``, the jobs whose texts contain it."""
    jobs = jobs_of(member).order_by("-created_at")
    if status:
        jobs = jobs.filter(status=status)
    if model:
        jobs = jobs.filter(model=model)
    if query:
        return JobSearchResults(job_ids_matching(jobs, query, workspace_id=member.workspace_id))
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


# One line per usage record, the same in the usage CSV download and in data exports.
USAGE_CSV_COLUMNS = [
    "created_at", "job_id", "member", "model", "status", "prompt_tokens", "completion_tokens", "tokens_charged",
    "queue_wait_ms", "run_ms",
]  # fmt: skip


def usage_csv_row(record: UsageRecord) -> list:
    return [
        record.created_at.isoformat(), record.job_id or "", record.user.email if record.user else DELETED_ACCOUNT,
        record.model, record.status, record.prompt_tokens, record.completion_tokens, record.tokens_charged,
        record.queue_wait_ms, record.run_ms,
    ]  # fmt: skip


async def job_of_async(member, job_id) -> GenerationJob | None:
    return await jobs_of(member).filter(pk=job_id).afirst()
