from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from inference.models import GenerationJob, Worker


def workers_alive() -> QuerySet[Worker]:
    cutoff = timezone.now() - timedelta(seconds=settings.WORKER_STALE_SECONDS)
    return Worker.objects.filter(last_heartbeat_at__gte=cutoff)


def jobs_of(user) -> QuerySet[GenerationJob]:
    """Every read of jobs on behalf of a user starts here: another user's job is unreachable."""
    return GenerationJob.objects.filter(user=user)


async def job_of_async(user, job_id) -> GenerationJob | None:
    return await jobs_of(user).filter(pk=job_id).afirst()
