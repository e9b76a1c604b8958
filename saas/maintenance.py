"""Housekeeping on a clock, run by `manage.py maintenance`: the sweeper and text retention.

They run in their own process and straight against the database, never through the broker:
workers read the generation queues in strict priority, so a message for housekeeping waits
behind any generation backlog (and expires there) exactly when the sweeper is needed most, and
a broker that is down would stop it altogether (Invariant 10).

Each run takes a PostgreSQL advisory lock first (skipped when another process holds it), so any
number of maintenance processes may run side by side; every move the chores make is a
conditional update anyway, so the lock only saves duplicate work. SQLite has no such lock and
needs none: the embedded profile runs one maintenance process.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

import redis
from django.conf import settings
from django.db import connection

from billing.services.personal_data import webhook_payloads_scrub_expired
from inference import services
from saas.exports import exports_sweep

logger = logging.getLogger(__name__)

SWEEP_MARK_KEY = "inkwell:maintenance:swept-at"


class Outcome(Enum):
    DONE = "done"
    SKIPPED = "skipped"  # another process holds the chore's lock and is running it now
    FAILED = "failed"


@dataclass(frozen=True)
class Chore:
    name: str
    interval_seconds: float
    run: Callable[[], object]

    @property
    def lock_key(self) -> int:
        # A stable 32-bit key per chore, so the sweeper and retention never wait on each other.
        return zlib.crc32(f"inkwell.maintenance.{self.name}".encode())


def _sweep() -> object:
    report = services.jobs_sweep()
    sweep_mark()
    return report


def _retention() -> int:
    """Erase what the plans' retention and BILLING_EVENT_RETENTION_DAYS say is due: job texts,
    then the personal fields of stored Stripe events; then the archives of data exports whose link
    has expired (the link itself stops working on time), failing builds that never finished.
    Returns how many rows changed."""
    return services.job_texts_erase_expired() + webhook_payloads_scrub_expired() + exports_sweep()


def chores() -> list[Chore]:
    return [
        Chore("sweep", settings.SWEEP_INTERVAL_SECONDS, _sweep),
        Chore("retention", settings.RETENTION_INTERVAL_SECONDS, _retention),
    ]


def _lock_take(key: int) -> bool:
    """Whether this process may run the chore now (always, on SQLite)."""
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        return bool(cursor.fetchone()[0])


def _lock_release(key: int) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [key])


def _discard_connection() -> None:
    """Close the database connection for good, so that a lock it may still hold dies with it
    (handing it back to the pool would keep the lock, and every other process waiting)."""
    raw = connection.connection
    if raw is not None:
        with contextlib.suppress(Exception):
            raw.close()
    with contextlib.suppress(Exception):
        connection.close()


def chore_run(chore: Chore) -> Outcome:
    """Run ``chore`` once under its lock. Never raises: a database or broker error is logged and
    the next tick tries again. Between runs the process holds no database connection."""
    started = time.monotonic()
    try:
        if not _lock_take(chore.lock_key):
            logger.debug("maintenance: %s skipped, another process is running it", chore.name)
            connection.close()
            return Outcome.SKIPPED
    except Exception:
        logger.exception("maintenance: %s could not start (database); trying again at the next tick", chore.name)
        _discard_connection()
        return Outcome.FAILED
    try:
        result = chore.run()
        outcome = Outcome.DONE
    except Exception:
        logger.exception("maintenance: %s failed; trying again at the next tick", chore.name)
        outcome = Outcome.FAILED
    try:
        _lock_release(chore.lock_key)
        connection.close()
    except Exception:
        _discard_connection()
    if outcome is Outcome.DONE and _worth_telling(result):
        logger.info("maintenance: %s: %s (%.2fs)", chore.name, result, time.monotonic() - started)
    return outcome


def _worth_telling(result: object) -> bool:
    if isinstance(result, int):
        return result > 0
    return any(getattr(result, name, None) for name in ("requeued", "failed", "cancelled", "resent"))


def maintenance_loop(
    *,
    chores: list[Chore],
    stopping: Callable[[], bool],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    tick_seconds: float = 0.2,
) -> None:
    """Run every chore now, then each every ``interval_seconds`` (start to start; a run that
    overran is not made up for) until ``stopping()``. A run in progress is finished first."""
    due = {chore.name: clock() for chore in chores}
    while not stopping():
        for chore in chores:
            if stopping():
                return
            if clock() >= due[chore.name]:
                due[chore.name] = clock() + chore.interval_seconds
                chore_run(chore)
        wait = min(due.values()) - clock()
        if wait > 0:
            # Short naps: a signal handler only sets a flag (it must take no lock), and this
            # loop notices it within a tick.
            sleep(min(wait, tick_seconds))


# --- when the sweeper last ran, for /healthz ---------------------------------------------------


@functools.cache
def _redis() -> redis.Redis:
    # Timeouts: an unreachable Redis must not hold the maintenance loop (or /healthz) up.
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def sweep_mark() -> None:
    """Record that a sweep has just finished. Best effort: Redis may be down, the sweep is not."""
    try:
        _redis().set(SWEEP_MARK_KEY, repr(time.time()), ex=settings.MAINTENANCE_STALE_SECONDS)
    except redis.RedisError:
        logger.warning("maintenance: could not record the sweep in Redis", exc_info=True)


def sweep_last_finished() -> datetime | None:
    """When a sweep last finished, if within MAINTENANCE_STALE_SECONDS. Raises if Redis is down."""
    value = _redis().get(SWEEP_MARK_KEY)
    if value is None:
        return None
    return datetime.fromtimestamp(float(value), tz=UTC)
