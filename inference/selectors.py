from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from inference.models import Worker


def workers_alive() -> QuerySet[Worker]:
    cutoff = timezone.now() - timedelta(seconds=settings.WORKER_STALE_SECONDS)
    return Worker.objects.filter(last_heartbeat_at__gte=cutoff)
