from __future__ import annotations

from django.db import models


class Worker(models.Model):
    """A running Celery worker process, as it last reported itself.

    The row is the worker's heartbeat: /healthz counts the fresh ones, and jobs held by a worker
    whose heartbeat went stale can be taken back.
    """

    name = models.CharField(max_length=255, unique=True)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    queues = models.JSONField(default=list)
    started_at = models.DateTimeField()
    last_heartbeat_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return self.name
