"""/healthz: is the database reachable, the broker reachable, at least one worker alive, and the
sweeper running (a maintenance process has finished a sweep lately)?"""

from __future__ import annotations

import logging

from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from inference.selectors import workers_alive
from saas.celery import app as celery_app
from saas.maintenance import sweep_last_finished

logger = logging.getLogger(__name__)


def _database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return None
    except Exception as exc:
        return f"database unreachable: {exc.__class__.__name__}"


def _broker() -> str | None:
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
        return None
    except Exception as exc:
        return f"broker unreachable: {exc.__class__.__name__}"


def _worker() -> str | None:
    try:
        if workers_alive().exists():
            return None
        return "no worker has sent a heartbeat recently"
    except Exception as exc:
        return f"cannot read worker heartbeats: {exc.__class__.__name__}"


def _maintenance() -> str | None:
    try:
        if sweep_last_finished() is not None:
            return None
        return "no sweep has finished recently (is `manage.py maintenance` running?)"
    except Exception as exc:
        return f"cannot read when the sweeper last ran: {exc.__class__.__name__}"


CHECKS = {"database": _database, "broker": _broker, "worker": _worker, "maintenance": _maintenance}
# What one web process needs to serve requests. A load balancer probes this: a worker or the
# maintenance process being down is no reason to take web processes out of rotation.
WEB_CHECKS = ("database", "broker")


def _report(name: str, parts) -> JsonResponse:
    checks = {}
    down = []
    for part in parts:
        problem = CHECKS[part]()
        checks[part] = {"ok": problem is None, **({"error": problem} if problem else {})}
        if problem:
            down.append(part)
            logger.warning("%s: %s", name, problem)
    body = {"status": "down" if down else "ok", "down": down, "checks": checks}
    return JsonResponse(body, status=503 if down else 200)


@never_cache
@require_GET
def healthz(request):
    """The whole system: database, broker, a live worker, the sweeper (for monitoring)."""
    return _report("healthz", CHECKS)


@never_cache
@require_GET
def readyz(request):
    """This web process can serve: its database and broker answer (for load balancers)."""
    return _report("readyz", WEB_CHECKS)
