"""Real processes for the tests: a Celery worker and the ASGI web server, on the test database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import connection

from saas.celery import ALL_QUEUES
from saas.embedded import die_with_parent
from saas.tasks import ping

BASE_DIR = Path(settings.BASE_DIR)


def database_url() -> str:
    """The URL of the database this test session runs on (the test database, not the real one)."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    auth = quote(db["USER"] or "")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"])
    host = db["HOST"] or "localhost"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{auth}@{host}{port}/{db['NAME']}"


def process_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        INKWELL_ENV="test",
        DATABASE_URL=database_url(),
        REDIS_URL=settings.REDIS_URL,
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str, process=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: process exited with code {process.returncode}")
        try:
            if predicate():
                return
        except Exception:  # noqa: S110 - not up yet; try again until the deadline
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f}s")


class ManagedProcess:
    def __init__(self, args: list[str], env: dict[str, str] | None, log_path: Path):
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            args, cwd=BASE_DIR, env=env, stdout=self._log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def start_worker(log_dir: Path, *, name: str = "test", concurrency: int = 4, **env: str) -> ManagedProcess:
    args = [
        sys.executable, "-m", "celery", "-A", "saas", "worker", "--loglevel", "INFO",
        "--pool", "threads", "--concurrency", str(concurrency),
        "--queues", ",".join(ALL_QUEUES), "--hostname", f"{name}@%h", "--without-mingle", "--without-gossip",
    ]  # fmt: skip
    env.setdefault("WORKER_HEARTBEAT_SECONDS", "1")  # tests wait on heartbeats; keep them quick
    return ManagedProcess(args, process_env(**env), log_dir / f"worker-{name}.log")


def start_worker_ready(log_dir: Path, **options) -> ManagedProcess:
    """``start_worker``, then wait until it answers a ping through the broker; if it never does,
    stop it and fail with the end of its log."""
    worker = start_worker(log_dir, **options)
    try:
        wait_until(
            lambda: ping.apply_async(expires=5).get(timeout=2) == "pong",
            timeout=60,
            what="celery worker",
            process=worker.process,
        )
    except Exception:
        worker.stop()
        raise RuntimeError("the Celery worker did not start:\n" + worker.log()[-3000:]) from None
    return worker


def start_web(log_dir: Path, port: int, **env: str) -> ManagedProcess:
    args = [
        sys.executable, "-m", "uvicorn", "saas.asgi:application",
        "--host", "127.0.0.1", "--port", str(port), "--lifespan", "off",
    ]  # fmt: skip
    return ManagedProcess(args, process_env(**env), log_dir / "web.log")
