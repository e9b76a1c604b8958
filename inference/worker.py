"""Glue between a Celery worker process and the database: the worker's heartbeat row."""

from __future__ import annotations

import logging
import os
import socket
import threading

from celery.signals import worker_ready, worker_shutdown
from django.conf import settings
from django.db import close_old_connections

logger = logging.getLogger(__name__)

_stop = threading.Event()
_state: dict[str, str] = {}


def worker_name() -> str:
    """This process's name in the Worker table: unique per process, even on one host."""
    return _state.get("name", f"{socket.gethostname()}/{os.getpid()}")


def _beat(name: str, hostname: str, queues: list[str]) -> None:
    from inference.services import worker_heartbeat

    while not _stop.is_set():
        try:
            worker_heartbeat(name=name, hostname=hostname, pid=os.getpid(), queues=queues)
        except Exception:  # the database may be briefly away; the next beat tries again
            logger.exception("worker heartbeat failed")
        finally:
            close_old_connections()
        _stop.wait(settings.WORKER_HEARTBEAT_SECONDS)


@worker_ready.connect
def _start_heartbeat(sender, **kwargs) -> None:
    hostname = socket.gethostname()
    name = f"{sender.hostname}/{os.getpid()}"
    _state["name"] = name
    queues = sorted(q.name for q in sender.app.amqp.queues.consume_from.values())
    threading.Thread(target=_beat, args=(name, hostname, queues), name="inkwell-heartbeat", daemon=True).start()


@worker_shutdown.connect
def _stop_heartbeat(sender, **kwargs) -> None:
    from inference.services import worker_stop

    _stop.set()
    if "name" in _state:
        try:
            worker_stop(name=_state["name"])
        except Exception:
            logger.exception("could not remove the worker's heartbeat row")
