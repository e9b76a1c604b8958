"""`make run`: everything Inkwell needs on one machine, in one command, stopped by Ctrl-C.

Migrates, seeds, starts an embedded Redis (unless REDIS_URL is set), the ASGI web server and one
Celery worker, then watches them: if one dies, all stop; SIGINT or SIGTERM stops them in order.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from inference import catalog
from saas.celery import ALL_QUEUES
from saas.embedded import EmbeddedRedis, EmbeddedRedisError, die_with_parent


def web_command(host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "saas.asgi:application",
        "--host", host, "--port", str(port), "--lifespan", "off",
    ]  # fmt: skip


def worker_command(concurrency: int) -> list[str]:
    # One process holds the engine; its thread pool holds as many jobs as the engine batches.
    # --beat runs the sweeper's schedule in the same process (production runs `celery beat` once).
    return [
        sys.executable, "-m", "celery", "-A", "saas", "worker", "--beat",
        "--loglevel", "INFO", "--pool", "threads", "--concurrency", str(concurrency),
        "--queues", ",".join(ALL_QUEUES), "--hostname", "inkwell@%h",
    ]  # fmt: skip


class Command(BaseCommand):
    help = "Run Inkwell locally: migrate, seed, then the web server and a worker (and Redis if needed)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--no-migrate", action="store_true", help="skip migrate and seed")

    def handle(self, *args, **options) -> None:
        self._stopping = False
        # `make run` is our parent: if it is killed, stop everything as on Ctrl-C.
        die_with_parent()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._request_stop)
        redis_server = None
        if settings.REDIS_EMBEDDED:
            redis_server = EmbeddedRedis(port=settings.EMBEDDED_REDIS_PORT, data_dir=settings.VAR_DIR / "redis")
            try:
                redis_server.start()
            except EmbeddedRedisError as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(f"Embedded Redis on {redis_server.url}")
        children: list[tuple[str, subprocess.Popen]] = []
        try:
            if not options["no_migrate"]:
                call_command("migrate", interactive=False, verbosity=0)
                call_command("seed")
            if catalog.local_model_missing(next(iter(settings.INFERENCE_MODELS))) and (
                next(iter(settings.INFERENCE_MODELS.values())) == str(settings.DEMO_MODEL_PATH)
            ):
                call_command("build_demo_model")
            children.append(("web", self._spawn(web_command(settings.SERVE_HOST, settings.SERVE_PORT))))
            children.append(("worker", self._spawn(worker_command(settings.WORKER_CONCURRENCY))))
            self.stdout.write(
                self.style.SUCCESS(f"Inkwell is starting on http://{settings.SERVE_HOST}:{settings.SERVE_PORT}")
                + "  (Ctrl-C stops everything)"
            )
            exit_code = self._watch(children)
        finally:
            self._stop_all(children)
            if redis_server is not None:
                redis_server.stop()
        if exit_code:
            raise CommandError(f"a process stopped unexpectedly (exit code {exit_code}); everything was stopped")

    def _spawn(self, args: list[str]) -> subprocess.Popen:
        # A session of their own: Ctrl-C reaches only this launcher, which stops them in order.
        return subprocess.Popen(args, start_new_session=True, preexec_fn=die_with_parent)

    def _request_stop(self, signum, frame) -> None:
        self._stopping = True

    def _watch(self, children: list[tuple[str, subprocess.Popen]]) -> int:
        while not self._stopping:
            for name, process in children:
                code = process.poll()
                if code is not None:
                    self.stderr.write(f"{name} exited with code {code}")
                    return code or 1
            time.sleep(0.5)
        return 0

    def _stop_all(self, children: list[tuple[str, subprocess.Popen]]) -> None:
        for _, process in children:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 20
        for _, process in children:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
