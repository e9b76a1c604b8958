"""`make run`: everything Inkwell needs on one machine, in one command, stopped by Ctrl-C.

Migrates, seeds, starts an embedded Redis (unless REDIS_URL is set), then the maintenance process
(sweeper and retention), one Celery worker and the ASGI web server, and supervises them: one that
dies is restarted after a pause that doubles from 1 s to 30 s (back to 1 s once it has run a
minute), and each restart is logged. SIGINT or SIGTERM stops them all, each with everything it
started: every child runs in a process group of its own, which is sent SIGTERM, then SIGKILL
after a short grace.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from inference import catalog
from saas.celery import ALL_QUEUES
from saas.embedded import EmbeddedRedis, EmbeddedRedisError, die_with_parent, port_is_open

RESTART_FIRST_DELAY = 1.0
RESTART_MAX_DELAY = 30.0
STEADY_AFTER_SECONDS = 60.0  # a process that ran this long before dying starts again at once (1 s)
STOP_GRACE_SECONDS = 5.0  # SIGTERM, then SIGKILL to whatever of the group is left
# uvicorn otherwise waits for every open connection (an SSE stream never closes by itself).
WEB_GRACEFUL_SHUTDOWN_SECONDS = 2
TICK_SECONDS = 0.2


def web_command(host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "saas.asgi:application",
        "--host", host, "--port", str(port), "--lifespan", "off",
        "--timeout-graceful-shutdown", str(WEB_GRACEFUL_SHUTDOWN_SECONDS),
    ]  # fmt: skip


def worker_command(concurrency: int) -> list[str]:
    # One process holds the engine; its thread pool holds as many jobs as the engine batches.
    # No --beat: the schedule runs in the maintenance process, whatever the queues hold.
    return [
        sys.executable, "-m", "celery", "-A", "saas", "worker",
        "--loglevel", "INFO", "--pool", "threads", "--concurrency", str(concurrency),
        "--queues", ",".join(ALL_QUEUES), "--hostname", "inkwell@%h",
    ]  # fmt: skip


def maintenance_command() -> list[str]:
    return [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "maintenance"]


def restart_delay(previous: float | None, uptime: float) -> float:
    """How long to wait before starting again a process that died after ``uptime`` seconds."""
    if previous is None or uptime >= STEADY_AFTER_SECONDS:
        return RESTART_FIRST_DELAY
    return min(previous * 2, RESTART_MAX_DELAY)


class Child:
    """One supervised process, leader of a session (so of a process group) of its own: Ctrl-C
    reaches only the launcher, and whatever the child starts is stopped with it.

    A child that has exited is reaped only after its group was sent SIGKILL: until then its
    zombie keeps its pid, so the group's id can name no one else's processes.
    """

    def __init__(self, name: str, args: list[str], *, cwd: Path | None = None):
        self.name = name
        self.args = args
        self.cwd = cwd
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0
        self.delay: float | None = None  # the last pause before a restart
        self.restart_at: float | None = None

    def start(self, now: float) -> None:
        self.restart_at = None
        self.started_at = now
        self.process = subprocess.Popen(self.args, cwd=self.cwd, start_new_session=True, preexec_fn=die_with_parent)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def exit_code(self) -> int | None:
        """None while it runs; its exit code (negative: the signal) once it has exited, without
        reaping it."""
        if self.process is None:
            return None
        if self.process.returncode is not None:
            return self.process.returncode
        state = os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if state is None or state.si_pid == 0:
            return None
        return state.si_status if state.si_code == os.CLD_EXITED else -state.si_status

    def group_signal(self, sig: int) -> None:
        if self.process is None or self.process.returncode is not None:
            return  # reaped: its group id may already be someone else's
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def kill_and_reap(self) -> None:
        """SIGKILL to the whole group (what is left of it), then reap the leader."""
        if self.process is None:
            return
        self.group_signal(signal.SIGKILL)
        self.process.wait()


class Supervisor:
    def __init__(
        self, children: list[Child], *, log: Callable[[str], None], clock: Callable[[], float] = time.monotonic
    ):
        self.children = children
        self.log = log
        self.clock = clock

    def start_all(self) -> None:
        for child in self.children:
            self._start(child)

    def _start(self, child: Child) -> None:
        try:
            child.start(self.clock())
        except OSError as exc:
            child.process = None
            self._schedule_restart(child, f"could not start ({exc})")

    def _schedule_restart(self, child: Child, why: str) -> None:
        uptime = self.clock() - child.started_at
        child.delay = restart_delay(child.delay, uptime)
        child.restart_at = self.clock() + child.delay
        self.log(f"{child.name} {why} after {uptime:.0f}s; restarting in {child.delay:g}s")

    def check(self) -> None:
        """One pass: notice who died, start again those whose pause is over."""
        for child in self.children:
            if child.restart_at is None:
                code = child.exit_code()
                if code is None:
                    continue
                # Whatever it started goes with it (a worker's --beat child used to stay behind):
                # SIGTERM now, SIGKILL to what is left when the pause is over.
                child.group_signal(signal.SIGTERM)
                self._schedule_restart(child, f"(pid {child.pid}) exited with code {code}")
            elif self.clock() >= child.restart_at:
                child.kill_and_reap()
                self._start(child)
                if child.process is not None:
                    self.log(f"{child.name} restarted (pid {child.pid})")

    def run(self, stopping: Callable[[], bool]) -> None:
        while not stopping():
            self.check()
            time.sleep(TICK_SECONDS)

    def stop_all(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM to every group at once; once every leader has exited, or ``grace`` is over,
        SIGKILL to every group (to whatever is left of it), and reap."""
        for child in self.children:
            child.group_signal(signal.SIGTERM)
        deadline = self.clock() + grace
        running = [child for child in self.children if child.exit_code() is None and child.process is not None]
        while running and self.clock() < deadline:
            time.sleep(0.05)
            running = [child for child in running if child.exit_code() is None]
        for child in running:
            self.log(f"{child.name} did not stop within {grace:g}s; killing it")
        for child in self.children:
            child.kill_and_reap()


class Command(BaseCommand):
    help = "Run Inkwell locally: migrate, seed, then the web server, a worker and maintenance (and Redis if needed)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--no-migrate", action="store_true", help="skip migrate and seed")

    def handle(self, *args, **options) -> None:
        self._stopping = False
        # `make run` is our parent: if it is killed, stop everything as on Ctrl-C.
        die_with_parent()
        probe_host = "127.0.0.1" if settings.SERVE_HOST in {"0.0.0.0", "::", ""} else settings.SERVE_HOST  # noqa: S104
        if port_is_open(settings.SERVE_PORT, probe_host):
            raise CommandError(f"port {settings.SERVE_PORT} is already in use; set PORT to a free one")
        redis_server = None
        if settings.REDIS_EMBEDDED:
            # The test profile keeps nothing: var/redis holds the local profile's broker.
            data_dir = None if settings.TESTING else settings.VAR_DIR / "redis"
            redis_server = EmbeddedRedis(port=settings.EMBEDDED_REDIS_PORT, data_dir=data_dir)
            try:
                redis_server.start()
            except EmbeddedRedisError as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(f"Embedded Redis on {redis_server.url}")
        base_dir = Path(settings.BASE_DIR)
        supervisor = Supervisor(
            [
                Child("maintenance", maintenance_command(), cwd=base_dir),
                Child("worker", worker_command(settings.WORKER_CONCURRENCY), cwd=base_dir),
                Child("web", web_command(settings.SERVE_HOST, settings.SERVE_PORT), cwd=base_dir),
            ],
            log=self._log,
        )
        try:
            if not options["no_migrate"]:
                call_command("migrate", interactive=False, verbosity=0)
                call_command("seed")
            if catalog.local_model_missing(next(iter(settings.INFERENCE_MODELS))) and (
                next(iter(settings.INFERENCE_MODELS.values())) == str(settings.DEMO_MODEL_PATH)
            ):
                call_command("build_demo_model")
            # From here on a signal only asks the loop to stop (until now Ctrl-C interrupted the
            # setup at once): the children are stopped in order, with what they started.
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self._request_stop)
            supervisor.start_all()
            self.stdout.write(
                self.style.SUCCESS(f"Inkwell is starting on http://{settings.SERVE_HOST}:{settings.SERVE_PORT}")
                + "  (Ctrl-C stops everything)"
            )
            supervisor.run(stopping=lambda: self._stopping)
        finally:
            self._log("stopping everything")
            supervisor.stop_all()
            if redis_server is not None:
                # Last: the worker and the web server use it until they stop.
                redis_server.stop()
            self._log("stopped")

    def _log(self, line: str) -> None:
        self.stderr.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} serve: {line}")

    def _request_stop(self, signum, frame) -> None:
        self._stopping = True
