from __future__ import annotations

from celery import shared_task


@shared_task(name="saas.ping", ignore_result=False)
def ping() -> str:
    """Answers 'pong': health checks and the broker round-trip benchmark use it."""
    return "pong"
