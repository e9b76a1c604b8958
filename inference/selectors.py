from __future__ import annotations

from datetime import time, timedelta

from django.conf import settings
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from billing.models import UsageRecord
from inference.models import GenerationJob, JobStatus, Worker


def workers_alive() -> QuerySet[Worker]:
    cutoff = timezone.now() - timedelta(seconds=settings.WORKER_STALE_SECONDS)
    return Worker.objects.filter(last_heartbeat_at__gte=cutoff)


def jobs_of(user) -> QuerySet[GenerationJob]:
    """Every read of jobs on behalf of a user starts here: another user's job is unreachable."""
    return GenerationJob.objects.filter(user=user, deleted_at__isnull=True)


def job_ids_of(user) -> list[str]:
    """The ids of every job of ``user``, deleted ones included (account deletion)."""
    return [str(pk) for pk in GenerationJob.objects.filter(user=user).values_list("pk", flat=True)]


def job_history(user, *, query: str = "", status: str = "", model: str = "") -> QuerySet[GenerationJob]:
    jobs = jobs_of(user).order_by("-created_at")
    if query:
        jobs = jobs.filter(Q(prompt__icontains=query) | Q(output_text__icontains=query))
    if status:
        jobs = jobs.filter(status=status)
    if model:
        jobs = jobs.filter(model=model)
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


def usage_by_day(user, *, start, end) -> list[tuple]:
    """(day, tokens charged) for every day of [start, end), days without use included."""
    rows = dict(
        UsageRecord.objects.filter(user=user, created_at__gte=start, created_at__lt=end)
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


def usage_by_model(user, *, start, end) -> list[dict]:
    return list(
        UsageRecord.objects.filter(user=user, created_at__gte=start, created_at__lt=end)
        .values("model")
        .annotate(tokens=Sum("tokens_charged"), jobs=Count("id"))
        .order_by("-tokens")
    )


def usage_records(user) -> QuerySet[UsageRecord]:
    return UsageRecord.objects.filter(user=user).order_by("created_at")


async def job_of_async(user, job_id) -> GenerationJob | None:
    return await jobs_of(user).filter(pk=job_id).afirst()
