"""`make run` (`manage.py serve`) keeps its processes up and, when stopped, leaves none behind."""

from __future__ import annotations

import http.client
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.test import Client
from django.utils import timezone

from accounts.workspaces import membership_personal
from inference.models import GenerationJob, JobStatus, Worker
from inference.services import job_submit
from saas.management.commands.serve import (
    RESTART_MAX_DELAY,
    Child,
    Supervisor,
    restart_delay,
    worker_command,
)
from tests.factories import PlanFactory, SubscriptionFactory, UserFactory
from tests.support import BASE_DIR, ManagedProcess, free_port, process_env, wait_until

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table in /proc")


# --- the process table ------------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgid: int
    state: str
    started: int  # clock ticks after boot: tells a process from a later one with the same pid

    @property
    def alive(self) -> bool:
        return self.state != "Z"


def _proc(pid: int) -> Proc | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return Proc(pid, int(fields[1]), int(fields[2]), fields[0], int(fields[19]))


def _processes() -> list[Proc]:
    found = (_proc(int(entry)) for entry in os.listdir("/proc") if entry.isdigit())
    return [proc for proc in found if proc is not None]


def _descendants(root: int) -> list[Proc]:
    table = _processes()
    tree, frontier = [], {root}
    while frontier:
        children = [proc for proc in table if proc.ppid in frontier]
        tree += children
        frontier = {proc.pid for proc in children}
    return tree


def _still_running(procs: list[Proc]) -> list[Proc]:
    """Those of ``procs`` still running, and any live process in one of their process groups."""
    groups = {proc.pgid for proc in procs}
    same = [now for proc in procs if (now := _proc(proc.pid)) and now.started == proc.started and now.alive]
    in_groups = [proc for proc in _processes() if proc.pgid in groups and proc.alive]
    return sorted({*same, *in_groups}, key=lambda proc: proc.pid)


# --- the supervisor, on small shell scripts ---------------------------------------------------


def test_the_restart_delay_doubles_up_to_30s_and_resets_after_a_minute_up():
    delays, delay = [], None
    for _ in range(8):
        delay = restart_delay(delay, uptime=2)
        delays.append(delay)

    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert RESTART_MAX_DELAY == 30
    assert restart_delay(30, uptime=61) == 1


def _sleeper_with_a_grandchild(tmp_path: Path, *, ignore_term: bool = False) -> list[str]:
    """A shell that starts a background sleep (its grandchild, from the supervisor's view), writes
    that pid, and then waits; with ``ignore_term`` both ignore SIGTERM."""
    trap = "trap '' TERM; " if ignore_term else ""
    return ["sh", "-c", f"{trap}sleep 300 & echo $! > {tmp_path}/grandchild; wait"]


def _read_pid(path: Path) -> int:
    wait_until(lambda: path.exists() and path.read_text().strip(), timeout=5, what=str(path))
    return int(path.read_text())


def test_a_child_that_dies_is_restarted_and_what_it_started_is_stopped(tmp_path):
    lines: list[str] = []
    child = Child("sleeper", _sleeper_with_a_grandchild(tmp_path))
    supervisor = Supervisor([child], log=lines.append)
    supervisor.start_all()
    try:
        first, grandchild = child.pid, _read_pid(tmp_path / "grandchild")
        (tmp_path / "grandchild").unlink()
        os.kill(first, signal.SIGKILL)

        wait_until(lambda: supervisor.check() or child.pid != first, timeout=10, what="the restart")

        assert _proc(grandchild) is None or not _proc(grandchild).alive  # not left behind
        assert child.exit_code() is None and _read_pid(tmp_path / "grandchild") != grandchild
        assert lines[0].startswith(f"sleeper (pid {first}) exited with code -9 after ")
        assert lines[0].endswith("s; restarting in 1s")
        assert lines[1] == f"sleeper restarted (pid {child.pid})"
    finally:
        supervisor.stop_all(grace=2)


def test_a_second_quick_death_waits_twice_as_long(tmp_path):
    lines: list[str] = []
    child = Child("crasher", ["sh", "-c", "exit 3"])
    supervisor = Supervisor([child], log=lines.append)
    supervisor.start_all()
    try:
        wait_until(lambda: supervisor.check() or len(lines) >= 3, timeout=10, what="a second death")
    finally:
        supervisor.stop_all(grace=2)

    assert "exited with code 3" in lines[0] and lines[0].endswith("restarting in 1s")
    assert lines[2].endswith("restarting in 2s")


def test_stopping_kills_every_process_of_a_group_that_ignores_sigterm(tmp_path):
    child = Child("stubborn", _sleeper_with_a_grandchild(tmp_path, ignore_term=True))
    supervisor = Supervisor([child], log=lambda line: None)
    supervisor.start_all()
    _read_pid(tmp_path / "grandchild")
    tree = [_proc(child.pid), *_descendants(child.pid)]

    started = time.monotonic()
    supervisor.stop_all(grace=1)

    assert time.monotonic() - started < 3
    wait_until(lambda: not _still_running(tree), timeout=2, what="the group to be gone")


def test_the_worker_runs_no_beat():
    assert "--beat" not in worker_command(4) and "-B" not in worker_command(4)


# --- `manage.py serve`, for real ---------------------------------------------------------------


@dataclass
class Serve:
    process: ManagedProcess
    url: str

    @property
    def pid(self) -> int:
        return self.process.pid

    def child(self, fragment: str) -> Proc:
        """The live direct child of serve whose command line contains ``fragment``."""
        for proc in _descendants(self.pid):
            if proc.ppid == self.pid and proc.alive and fragment in _cmdline(proc.pid):
                return proc
        raise LookupError(fragment)

    def worker_row(self) -> Worker | None:
        """The heartbeat row of serve's live worker."""
        worker_pids = {proc.pid for proc in _descendants(self.pid) if "celery" in _cmdline(proc.pid)}
        return Worker.objects.filter(pid__in=worker_pids).order_by("-started_at").first()

    def get(self, path: str) -> int:
        host, port = self.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        try:
            conn.request("GET", path)
            return conn.getresponse().status
        finally:
            conn.close()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.fixture
def serve(artifacts_dir, tiny_model_path, transactional_db):
    """`manage.py serve --no-migrate` on the test database, with its own embedded Redis."""
    port = free_port()
    env = process_env(
        HOST="127.0.0.1",
        PORT=str(port),
        INKWELL_EMBEDDED_REDIS_PORT=str(free_port()),
        INFERENCE_ENGINE="noop",  # no model to load: the worker is up in seconds
        TORCH_THREADS="1",
        WORKER_CONCURRENCY="2",
        WORKER_HEARTBEAT_SECONDS="1",
        LOG_LEVEL="INFO",
    )
    for name in ("REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        env.pop(name, None)  # so serve starts (and must stop) an embedded Redis of its own
    args = [sys.executable, str(BASE_DIR / "manage.py"), "serve", "--no-migrate"]
    process = ManagedProcess(args, env, artifacts_dir / "logs" / "serve.log")
    running = Serve(process, f"http://127.0.0.1:{port}")
    try:
        wait_until(lambda: running.get("/") == 200, timeout=60, what="serve's web server", process=process.process)
        wait_until(lambda: running.worker_row() is not None, timeout=60, what="serve's worker", process=process.process)
    except Exception:
        process.stop()
        raise RuntimeError("serve did not start:\n" + process.log()[-4000:]) from None
    yield running
    process.stop()


def test_serve_restarts_a_killed_worker_and_the_web_server_stays_up(serve):
    web = serve.child("uvicorn")
    worker = serve.worker_row()
    doomed_group = [proc for proc in _processes() if proc.pgid == worker.pid]

    os.kill(worker.pid, signal.SIGKILL)

    wait_until(
        lambda: (row := serve.worker_row()) is not None and row.pid != worker.pid,
        timeout=45,
        what="a new worker",
        process=serve.process.process,
    )
    assert serve.get("/") == 200
    still = serve.child("uvicorn")
    assert (still.pid, still.started) == (web.pid, web.started)  # the same web server all along
    assert not _still_running(doomed_group)
    assert f"worker (pid {worker.pid}) exited with code -9" in serve.process.log()
    assert "worker restarted (pid " in serve.process.log()
    healthz = serve.get("/healthz")
    assert healthz == 200, serve.process.log()[-3000:]


def _open_stream(serve: Serve) -> http.client.HTTPConnection:
    """An SSE stream of a running job, left open (the job's worker is alive: nothing ends it)."""
    plan = PlanFactory(slug="pro")
    user = SubscriptionFactory(plan=plan, user=UserFactory(email="pro@example.com")).workspace.personal_of
    job = job_submit(member=membership_personal(user), prompt="Once upon a time", max_new_tokens=20)
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(job.queue)  # not serve's broker anyway
    GenerationJob.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING, worker=serve.worker_row().name, attempts=1, started_at=timezone.now()
    )
    client = Client()
    client.force_login(user)
    host, port = serve.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", f"/jobs/{job.pk}/stream", headers={"Cookie": f"sessionid={client.cookies['sessionid'].value}"})
    response = conn.getresponse()
    assert response.status == 200
    assert response.readline().startswith(b"event: status")
    return conn


def test_sigterm_stops_serve_and_every_process_it_started_even_with_a_stream_open(serve):
    stream = _open_stream(serve)
    tree = _descendants(serve.pid)
    commands = " ".join(_cmdline(proc.pid) for proc in tree)
    assert all(part in commands for part in ("uvicorn", "celery", "maintenance", "redis-server")), commands

    started = time.monotonic()
    serve.process.process.send_signal(signal.SIGTERM)
    code = serve.process.process.wait(timeout=30)
    took = time.monotonic() - started

    try:
        assert code == 0, serve.process.log()[-3000:]
        # uvicorn alone would wait for the stream as long as it is open (serve used to give up
        # after 20 s); now: 2 s for the web server, at most 5 s for the rest, slack for a busy box.
        assert took < 12, f"serve took {took:.1f}s to stop"
        wait_until(lambda: not _still_running(tree), timeout=3, what="every process of serve to be gone")
    finally:
        stream.close()
        for proc in _still_running(tree):
            os.kill(proc.pid, signal.SIGKILL)
