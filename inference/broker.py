"""What the sweeper needs to know of the broker: whether it has lost the messages it held.

Redis as Celery's broker keeps queued messages in memory; restarted without persistence (or
flushed) it forgets them, and the queued jobs they named would wait for the slow resend. A marker
key written into the broker records when its present memory began: a marker younger than a job's
send means that send was lost.
"""

from __future__ import annotations

import functools
import logging
import time
from datetime import UTC, datetime

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

EPOCH_KEY = "inkwell:broker:epoch"


@functools.cache
def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=5, socket_connect_timeout=5)


def broker_epoch() -> datetime | None:
    """Since when the broker has held its messages (the first time this was asked of its
    present memory). None if the broker cannot be reached, or is not Redis."""
    if not settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://", "unix://")):
        return None
    try:
        client = _client()
        client.set(EPOCH_KEY, repr(time.time()), nx=True)
        value = client.get(EPOCH_KEY)
    except redis.RedisError:
        logger.warning("the broker is unreachable", exc_info=True)
        return None
    return datetime.fromtimestamp(float(value), tz=UTC)
