"""The Celery app: JSON only, late acks, one message prefetched per slot, explicit time limits.

Queues, in the order a worker drains them (strict priority on Redis):
  gen.high, gen.normal, gen.low   generation jobs by the plan's priority
  maintenance                     pings, and housekeeping tasks sent by hand

There is no beat schedule: a scheduled message would wait behind any generation backlog, so the
sweeper and retention run on their clock in `manage.py maintenance` (saas/maintenance.py).
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Exchange, Queue

from saas.broker_transport import TRANSPORT

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings")

GENERATION_QUEUES = ("gen.high", "gen.normal", "gen.low")
MAINTENANCE_QUEUE = "maintenance"
ALL_QUEUES = (*GENERATION_QUEUES, MAINTENANCE_QUEUE)

app = Celery("saas")


def _config() -> dict:
    from django.conf import settings  # here, so that importing this module never configures Django

    redis_broker = settings.CELERY_BROKER_URL.split("://", 1)[0] in ("redis", "rediss")
    return dict(
        broker_url=settings.CELERY_BROKER_URL,
        broker_transport=TRANSPORT if redis_broker else None,
        result_backend=settings.CELERY_RESULT_BACKEND,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        timezone=settings.TIME_ZONE,
        enable_utc=True,
        # A message is acknowledged only after its task finished, so a worker that dies mid-task
        # leaves it to be delivered again; the task's conditional claim makes that harmless.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.JOB_HARD_TIME_LIMIT,
        task_soft_time_limit=settings.JOB_SOFT_TIME_LIMIT,
        task_ignore_result=True,
        result_expires=3600,
        task_queues=[Queue(name, Exchange(name), routing_key=name) for name in ALL_QUEUES],
        task_default_queue=MAINTENANCE_QUEUE,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            # Must exceed the longest task, or Redis redelivers a task that is still running.
            "visibility_timeout": settings.BROKER_VISIBILITY_TIMEOUT,
            "queue_order_strategy": "priority",
        },
        result_backend_transport_options={"visibility_timeout": settings.BROKER_VISIBILITY_TIMEOUT},
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
    )


# Read lazily, on first use, so importing this module never forces Django's settings early.
app.add_defaults(_config)
app.autodiscover_tasks()
