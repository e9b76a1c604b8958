"""Glue between a Celery worker process and the rest: its heartbeat row, its engines (loaded once,
at start), and the cancel messages that stop a running job at its next token."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading

from celery.signals import worker_ready, worker_shutdown
from django.conf import settings
from django.db import close_old_connections

from inference import executor, streams
from inference.services import worker_heartbeat, worker_stop

logger = logging.getLogger(__name__)

_stop = threading.Event()
_state: dict[str, str] = {}
ENGINE_FAILED_EXIT_CODE = 3  # not 0: a supervisor set to restart on failure must restart it


def worker_name() -> str:
    """This process's name in the Worker table: unique per process, even on one host."""
    return _state.get("name", f"{socket.gethostname()}/{os.getpid()}")


def engine_failure_check() -> bool:
    """If an engine of this process died, stop reporting healthy (drop the heartbeat row, so
    /healthz and the sweeper see this worker gone) and ask the worker to shut down: its running
    jobs end at once with what they delivered, and the process exits with ENGINE_FAILED_EXIT_CODE
    so a supervisor starts a fresh one. True if that happened."""
    failed = executor.engines_failed()
    if not failed:
        return False
    logger.critical("engine failed (%s); this worker stops so that a fresh one replaces it", failed)
    _state["engine_failed"] = "; ".join(f"{name}: {why}" for name, why in failed.items())
    _stop.set()
    try:
        worker_stop(name=worker_name())
    except Exception:
        logger.exception("could not remove the worker's heartbeat row")
    finally:
        close_old_connections()
    os.kill(os.getpid(), signal.SIGTERM)  # Celery's warm shutdown: running tasks record their end
    return True


def _beat(name: str, hostname: str, queues: list[str]) -> None:
    while not _stop.is_set():
        if engine_failure_check():
            return
        try:
            worker_heartbeat(name=name, hostname=hostname, pid=os.getpid(), queues=queues)
        except Exception:  # the database may be briefly away; the next beat tries again
            logger.exception("worker heartbeat failed")
        finally:
            close_old_connections()
        _stop.wait(settings.WORKER_HEARTBEAT_SECONDS)


def _listen_for_cancels() -> None:
    while not _stop.is_set():
        try:
            pubsub = streams.client().pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(streams.CANCEL_CHANNEL)
            while not _stop.is_set():
                message = pubsub.get_message(timeout=1.0)
                if message and message.get("type") == "message":
                    executor.cancel(message["data"])
        except Exception:  # Redis went away: the task's database poll still cancels; reconnect
            logger.warning("cancel listener lost Redis; retrying", exc_info=True)
            _stop.wait(2)


@worker_ready.connect
def _on_worker_ready(sender, **kwargs) -> None:
    hostname = socket.gethostname()
    name = f"{sender.hostname}/{os.getpid()}"
    _state["name"] = name
    queues = sorted(q.name for q in sender.app.amqp.queues.consume_from.values())
    threading.Thread(target=_beat, args=(name, hostname, queues), name="inkwell-heartbeat", daemon=True).start()
    threading.Thread(target=_listen_for_cancels, name="inkwell-cancels", daemon=True).start()
    executor.configure_torch()
    # Load the models now, not on the first job (a load takes seconds); jobs that arrive
    # meanwhile wait for the load.
    threading.Thread(target=executor.preload, name="inkwell-preload", daemon=True).start()


@worker_shutdown.connect
def _on_worker_shutdown(sender, **kwargs) -> None:
    _stop.set()
    executor.shutdown()
    if "name" in _state:
        try:
            worker_stop(name=_state["name"])
        except Exception:
            logger.exception("could not remove the worker's heartbeat row")
    if "engine_failed" in _state:
        # Running tasks have recorded their end by now (warm shutdown waits for them).
        logging.shutdown()
        os._exit(ENGINE_FAILED_EXIT_CODE)
