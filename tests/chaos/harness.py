"""Load and chaos, measured: a private Inkwell (its own PostgreSQL cluster, Redis, web server,
workers and maintenance process) that can be loaded through the REST API, broken (Redis or
PostgreSQL restarted, workers SIGKILLed) and then checked for what a customer would notice:
accepted jobs lost, jobs charged twice, a ledger that disagrees with the jobs, reservations left.

Used by `bench/chaos.py` (the full bench, prints a table) and by `tests/chaos/` (a small version
in CI). Nothing here imports Django: the parent process only starts processes, sends HTTP and
reads the private database with SQL, so it can run inside the test suite (whose Django talks to
the shared servers) without touching anything shared.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import multiprocessing
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "chaos"
QUEUES = "gen.high,gen.normal,gen.low,maintenance"
FINAL = ("succeeded", "failed", "cancelled")
PROMPTS = (
    "The lighthouse keeper",
    "Once upon a time",
    "In the morning the harbour",
    "A letter arrived",
    "The recipe calls for",
)
# Variables of the caller's environment that would point a child at shared services or change
# what it runs; the stack sets its own.
SCRUBBED_ENV = (
    "DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "INKWELL_EMBEDDED_REDIS_PORT",
    "STRIPE_SECRET_KEY", "STRIPE_API_BASE", "INFERENCE_MODELS", "INFERENCE_ENGINE", "INFERENCE_DEVICE",
    "DJANGO_ALLOW_ASYNC_UNSAFE", "JOB_HARD_TIME_LIMIT", "JOB_SOFT_TIME_LIMIT", "BROKER_VISIBILITY_TIMEOUT",
    "JOB_MAX_ATTEMPTS", "JOB_REQUEUE_AFTER_SECONDS", "WORKER_CONCURRENCY", "ENGINE_MAX_BATCH", "PORT", "HOST",
)  # fmt: skip


class HarnessError(RuntimeError):
    """The harness itself could not do its part (a service did not start...): not a verdict."""


class OutOfTime(HarnessError):
    pass


class Deadline:
    """The whole run's time bound: every wait is capped by what is left of it."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def cap(self, seconds: float) -> float:
        return max(0.0, min(seconds, self.left()))

    def check(self, what: str) -> None:
        if self.left() <= 0:
            raise OutOfTime(f"out of time before {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """Linux: SIGKILL this child if the harness dies, so nothing is left running."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def poll_until(predicate: Callable[[], object], *, timeout: float, every: float = 0.2) -> object:
    """``predicate()``'s first truthy value within ``timeout`` seconds; None if none came.
    An exception from it counts as "not yet" (a service may be restarting)."""
    end = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception:  # noqa: S110 - not ready yet; try again until the deadline
            pass
        if time.monotonic() >= end:
            return None
        time.sleep(every)


# --- processes ------------------------------------------------------------------------------------


class Proc:
    """A child process in a session of its own, its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path):
        self.name = name
        self.db_name = ""  # a worker's name in the Worker table (and in its jobs' rows)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self.popen = subprocess.Popen(
                args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=_die_with_parent,
            )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL, the way the OOM killer or a lost host ends a process: no clean-up at all."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()

    def stop(self, grace: float = 10) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=grace)
        # Whatever is left of its group (a child of the child) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)

    def why_exited(self) -> str:
        """How it ended, with the first critical line of its log (or its last error line)."""
        lines = self.tail(500_000).splitlines()
        critical = [line.strip() for line in lines if " CRITICAL " in line]
        errors = [line.strip() for line in lines if " ERROR " in line]
        reason = (critical[:1] or errors[-1:] or ["no error in its log"])[0][:300]
        return f"{self.name} (pid {self.pid}) exited with code {self.popen.returncode}: {reason}"

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


# --- private services -------------------------------------------------------------------------------


def postgres_bin() -> Path | None:
    """The newest PostgreSQL server binaries on this machine (Debian's layout), if any."""
    found = []
    for initdb in Path("/usr/lib/postgresql").glob("*/bin/initdb"):
        with contextlib.suppress(ValueError):
            found.append((float(initdb.parent.parent.name), initdb.parent))
    if found:
        return max(found)[1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def redis_server_bin() -> str | None:
    return shutil.which("redis-server")


def missing_services() -> str | None:
    """Why a private stack cannot run here, or None."""
    if postgres_bin() is None:
        return "no PostgreSQL server binaries (initdb, pg_ctl) on this machine"
    if redis_server_bin() is None:
        return "no redis-server on PATH"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser (PostgreSQL refuses to run as root)"
    return None


class PrivatePostgres:
    """A throwaway cluster: initdb into a temporary folder, trust auth, loopback only, no fsync.

    The postmaster runs as a child of the harness (not daemonized by `pg_ctl start`), so that it
    gets SIGQUIT (PostgreSQL's immediate shutdown) if the harness dies, however it dies; `pg_ctl`
    stops it. PostgreSQL refuses to run as root, so as root it runs as the `postgres` user."""

    def __init__(self, workdir: Path, log_dir: Path):
        self.bin = postgres_bin()
        self.dir = workdir / "pg"
        self.data = self.dir / "data"
        self.log_path = log_dir / "postgres.log"
        self.port = free_port()
        self.database = "inkwell"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{self.database}"

    def _as_postgres(self) -> None:
        """preexec: drop root for the postgres user, then ask for SIGQUIT when the harness dies
        (after the uid change, which would clear it)."""
        if os.geteuid() == 0:
            import pwd

            user = pwd.getpwnam("postgres")
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGQUIT)  # PR_SET_PDEATHSIG

    def _run(self, tool: str, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            [str(self.bin / tool), *args], capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL, preexec_fn=self._as_postgres, cwd=self.dir,
        )  # fmt: skip
        if done.returncode != 0:
            raise HarnessError(f"{tool} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done.stdout

    def start(self, timeout: float = 60) -> None:
        import psycopg

        if not (self.data / "PG_VERSION").exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(self.dir, "postgres", "postgres")
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.dir),
                    "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
                    "-c", "full_page_writes=off", "-c", "max_connections=300", "-c", "shared_buffers=64MB",
                ],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.dir,
                start_new_session=True, preexec_fn=self._as_postgres,
            )  # fmt: skip
        admin = f"postgres://postgres@127.0.0.1:{self.port}/postgres"

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise HarnessError(f"postgres exited with code {self.proc.returncode}; see {self.log_path}")
            with psycopg.connect(admin, connect_timeout=2):
                return True

        end = time.monotonic() + timeout
        while True:
            try:
                ready()
                break
            except HarnessError:
                raise
            except Exception:
                if time.monotonic() > end:
                    raise HarnessError(f"postgres did not accept connections within {timeout:.0f}s") from None
                time.sleep(0.1)
        with psycopg.connect(admin, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [self.database]).fetchone():
                conn.execute(f'CREATE DATABASE "{self.database}"')

    def stop(self, mode: str = "fast") -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
        finally:
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self, down_seconds: float) -> None:
        """`pg_ctl stop -m fast` (open transactions aborted, every client disconnected), a pause
        so the outage is felt, then start again on the same port."""
        self.stop("fast")
        time.sleep(down_seconds)
        self.start()


class PrivateRedis:
    """redis-server on a free loopback port, nothing persisted: a restart comes back empty, as a
    crashed broker without persistence does."""

    def __init__(self, workdir: Path, log_dir: Path):
        self.port = free_port()
        self.dir = workdir / "redis"
        self.log_path = log_dir / "redis.log"
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15) -> None:
        import redis

        self.dir.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_bin(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.dir),
        ]  # fmt: skip
        self.proc = Proc("redis", args, dict(os.environ), self.log_path)
        client = redis.Redis.from_url(self.url, socket_timeout=0.5)
        if not poll_until(client.ping, timeout=timeout, every=0.05):
            raise HarnessError(f"redis-server did not answer on port {self.port}:\n{self.proc.tail()}")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()

    def restart(self, down_seconds: float) -> None:
        """SIGKILL (a crash: the broker's queues are gone), a pause, then a fresh empty server."""
        self.kill()
        time.sleep(down_seconds)
        self.start()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(grace=5)


def _run_log_dir(parent: Path, keep: int = 5) -> Path:
    """A fresh folder for this run's logs (runs side by side do not mix theirs); only the
    newest ``keep`` runs' folders are kept."""
    parent.mkdir(parents=True, exist_ok=True)
    runs = sorted((p for p in parent.iterdir() if p.is_dir() and p.name.startswith("run-")), key=lambda p: p.name)
    for old in runs[: max(0, len(runs) - keep + 1)]:
        shutil.rmtree(old, ignore_errors=True)
    folder = parent / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    folder.mkdir()
    return folder


# --- the stack ------------------------------------------------------------------------------------------


@dataclass
class StackConfig:
    workers: int = 2
    concurrency: int = 8  # task slots (and engine batch) per worker
    users_per_plan: int = 3
    heartbeat_seconds: int = 1
    stale_seconds: int = 4
    sweep_interval_seconds: int = 5
    log_dir: Path = ARTIFACTS / "bench"  # each run logs into a folder of its own under this one
    extra_env: dict[str, str] = field(default_factory=dict)


class Stack:
    """Everything Inkwell runs on, private to this harness: PostgreSQL, Redis, one uvicorn web
    process, Celery workers and the maintenance process (the sweeper)."""

    def __init__(self, config: StackConfig | None = None):
        self.config = config or StackConfig()
        self.log_dir = _run_log_dir(self.config.log_dir)
        # Not under pytest's tmp_path: its folders are private to root, and PostgreSQL runs as
        # the postgres user, who must reach its data directory.
        self.workdir = Path(tempfile.mkdtemp(prefix="inkwell-chaos-"))
        self.workdir.chmod(0o755)
        self.pg = PrivatePostgres(self.workdir, self.log_dir)
        self.redis = PrivateRedis(self.workdir, self.log_dir)
        self.web_port = free_port()
        self.web: Proc | None = None
        self.workers: list[Proc] = []
        self.maintenance: Proc | None = None
        self.sweeper_kind = ""
        self.accounts: list[dict] = []
        self.dead_workers: list[Proc] = []
        self.unexpected_exits: list[str] = []
        self._worker_count = 0
        self._db = None

    # environment and commands

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
        env.update(
            INKWELL_ENV="test",
            DJANGO_SETTINGS_MODULE="saas.settings",
            DATABASE_URL=self.pg.url,
            REDIS_URL=self.redis.url,
            PYTHONUNBUFFERED="1",
            PYTHONPATH=str(ROOT),
            LOG_LEVEL="WARNING",
            WORKER_HEARTBEAT_SECONDS=str(self.config.heartbeat_seconds),
            WORKER_STALE_SECONDS=str(self.config.stale_seconds),
            SWEEP_INTERVAL_SECONDS=str(self.config.sweep_interval_seconds),
            # Two workers share the machine's cores: one torch thread each.
            TORCH_THREADS="1",
            ENGINE_MAX_BATCH=str(self.config.concurrency),
            HF_HUB_OFFLINE="1",
        )
        env.update(self.config.extra_env)
        env.update(extra)
        return env

    def manage(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env(), capture_output=True, text=True,
            timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if done.returncode != 0:
            raise HarnessError(f"manage.py {' '.join(args)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        return done.stdout

    # database reads (the harness's own connection, never through Django)

    def sql(self, query: str, params: Iterable = (), *, retry_seconds: float = 60) -> list[tuple]:
        import psycopg

        end = time.monotonic() + retry_seconds
        while True:
            try:
                if self._db is None or self._db.closed:
                    self._db = psycopg.connect(self.pg.url, autocommit=True, connect_timeout=5)
                return self._db.execute(query, list(params) or None).fetchall()
            except psycopg.OperationalError:
                with contextlib.suppress(Exception):
                    self._db.close()
                self._db = None
                if time.monotonic() > end:
                    raise
                time.sleep(0.5)

    # start and stop

    def start(self, deadline: Deadline | None = None) -> None:
        deadline = deadline or Deadline(600)
        why = missing_services()
        if why:
            raise HarnessError(why)
        self.pg.start()
        self.redis.start()
        self.manage("build_demo_model", "--size", "tiny")  # the test profile's model; once, kept in var/
        self.manage("migrate", "--no-input", "-v", "0")
        out = subprocess.run(
            [sys.executable, "-m", "tests.chaos.setup_data", str(self.config.users_per_plan)], cwd=ROOT,
            env=self.env(), capture_output=True, text=True, timeout=deadline.cap(180), stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if out.returncode != 0:
            raise HarnessError(f"setting up plans and keys failed:\n{out.stdout[-2000:]}{out.stderr[-3000:]}")
        self.accounts = json.loads(out.stdout.strip().splitlines()[-1])
        self.web = Proc(
            "web",
            [sys.executable, "-m", "uvicorn", "saas.asgi:application", "--host", "127.0.0.1",
             "--port", str(self.web_port), "--lifespan", "off", "--no-access-log", "--timeout-graceful-shutdown", "2"],
            self.env(),
            self.log_dir / "web.log",
        )  # fmt: skip
        started = [self.start_worker(wait=False) for _ in range(self.config.workers)]
        self.start_sweeper()
        key = self.accounts[0]["key"]
        if not poll_until(lambda: _get(self.base_url, "/api/v1/ping", key)[0] == 200, timeout=deadline.cap(120)):
            raise HarnessError(f"the web server did not answer /api/v1/ping:\n{self.web.tail()}")
        for worker in started:
            self.wait_worker_ready(worker, timeout=deadline.cap(180))

    def start_worker(self, *, wait: bool = True, timeout: float = 180) -> Proc:
        self._worker_count += 1
        name = f"chaos-w{self._worker_count}"
        args = [
            sys.executable, "-m", "celery", "-A", "saas", "worker", "--loglevel", "WARNING",
            "--pool", "threads", "--concurrency", str(self.config.concurrency), "--queues", QUEUES,
            "--hostname", f"{name}@%h", "--without-mingle", "--without-gossip",
        ]  # fmt: skip
        worker = Proc(name, args, self.env(), self.log_dir / f"worker-{name}.log")
        # As inference.worker names it: Celery's node name (%h is this host's name), then the pid.
        worker.db_name = f"{name}@{socket.gethostname()}/{worker.pid}"
        self.workers.append(worker)
        if wait:
            self.wait_worker_ready(worker, timeout=timeout)
        return worker

    def wait_worker_ready(self, worker: Proc, *, timeout: float) -> str:
        """Its heartbeat row is in the database: it is consuming (its engine loads meanwhile)."""

        def registered():
            if not worker.alive():
                raise HarnessError(f"worker {worker.name} exited ({worker.popen.returncode}):\n{worker.tail()}")
            rows = self.sql("SELECT name FROM inference_worker WHERE name = %s", [worker.db_name], retry_seconds=5)
            return rows[0][0] if rows else None

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                name = registered()
            except HarnessError:
                raise
            except Exception:
                name = None
            if name:
                return name
            time.sleep(0.2)
        raise HarnessError(f"worker {worker.name} did not register within {timeout:.0f}s:\n{worker.tail()}")

    def start_sweeper(self) -> None:
        """`manage.py maintenance` (the sweeper on its clock) if this tree has it; otherwise a
        loop of `manage.py jobs_sweep` every SWEEP_INTERVAL_SECONDS."""
        if (ROOT / "saas" / "management" / "commands" / "maintenance.py").exists():
            self.sweeper_kind = "manage.py maintenance"
            args = [sys.executable, "manage.py", "maintenance"]
        else:
            self.sweeper_kind = "manage.py jobs_sweep loop"
            pause = self.config.sweep_interval_seconds
            loop = f'while :; do "{sys.executable}" manage.py jobs_sweep; sleep {pause}; done'
            args = ["sh", "-c", loop]
        self.maintenance = Proc("maintenance", args, self.env(LOG_LEVEL="INFO"), self.log_dir / "maintenance.log")

    def live_workers(self) -> list[Proc]:
        return [w for w in self.workers if w.alive()]

    def kill_worker(self, worker: Proc) -> None:
        worker.kill()
        self.workers.remove(worker)
        self.dead_workers.append(worker)

    def supervise(self) -> None:
        """Do what a supervisor (systemd, Kubernetes, `make run`) does: start again a worker or
        the maintenance process that exited by itself, recording how it ended in
        ``unexpected_exits`` (a process the harness SIGKILLed on purpose is not in the list)."""
        for worker in [w for w in self.workers if not w.alive()]:
            self.unexpected_exits.append(worker.why_exited())
            self.workers.remove(worker)
            self.dead_workers.append(worker)
            self.start_worker(wait=False)
        if self.maintenance is not None and not self.maintenance.alive():
            self.unexpected_exits.append(self.maintenance.why_exited())
            self.start_sweeper()
        if self.web is not None and not self.web.alive():
            self.unexpected_exits.append(self.web.why_exited())
            raise HarnessError(self.web.why_exited())

    def processes(self) -> list[Proc]:
        return [p for p in (self.web, self.maintenance, *self.workers) if p is not None]

    def stop(self) -> None:
        """Everything this stack started, and its temporary folder; safe to call twice."""
        for proc in self.processes():
            with contextlib.suppress(Exception):
                proc.stop(grace=10)
        with contextlib.suppress(Exception):
            if self._db is not None:
                self._db.close()
        with contextlib.suppress(Exception):
            self.pg.stop("immediate")
        with contextlib.suppress(Exception):
            self.redis.stop()
        # Never leave a cluster running: a postmaster that did not stop gets SIGQUIT (immediate).
        with contextlib.suppress(Exception):
            if self.pg.proc is not None and self.pg.proc.poll() is None:
                self.pg.proc.send_signal(signal.SIGQUIT)
                self.pg.proc.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# --- clients ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobSpec:
    key: str
    idempotency_key: str
    body: dict


def job_specs(
    accounts: list[dict], count: int, *, tag: str, seed: int, tokens: tuple[int, int] = (2, 8), queues=None
) -> list[JobSpec]:
    """``count`` job requests spread over the accounts (so over the plans' queues), each with an
    Idempotency-Key of its own that starts with ``tag`` (how the checks find the scenario's jobs)."""
    rng = random.Random(seed)
    pool = [a for a in accounts if queues is None or a["queue"] in queues]
    specs = []
    for index in range(count):
        account = pool[index % len(pool)]
        body = {
            "prompt": rng.choice(PROMPTS),
            "max_new_tokens": rng.randint(*tokens),
            "temperature": rng.choice((0.0, 0.8)),
            "seed": rng.randint(0, 10**6),
        }
        specs.append(JobSpec(account["key"], f"{tag}-{uuid.UUID(int=rng.getrandbits(128)).hex}", body))
    return specs


def _get(base_url: str, path: str, key: str) -> tuple[int, bytes]:
    host, port = base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {key}"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def client_run(task: tuple) -> dict:
    """One client process: submit each job, retrying a 429, a 5xx or a connection error with
    the same Idempotency-Key (so a retry can never make a second job), pacing one submit every
    ``interval`` seconds, giving up on a job at the wall-clock time ``give_up_at``."""
    base_url, specs, interval, give_up_at = task
    host, port = base_url.removeprefix("http://").split(":")
    accepted: dict[str, str] = {}
    rejected: dict[str, int] = {}
    gave_up: list[str] = []
    errors: Counter = Counter()
    replays = 0
    conn = None
    started = next_at = time.time()
    for spec in specs:
        if interval:
            time.sleep(max(0.0, next_at - time.time()))
            next_at = max(next_at + interval, time.time() - interval)
        delay = 0.2
        body = json.dumps(spec.body)
        headers = {
            "Authorization": f"Bearer {spec.key}",
            "Content-Type": "application/json",
            "Idempotency-Key": spec.idempotency_key,
        }
        while True:
            if time.time() > give_up_at:
                gave_up.append(spec.idempotency_key)
                break
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, int(port), timeout=30)
                conn.request("POST", "/api/v1/jobs", body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                errors["connection"] += 1
                with contextlib.suppress(Exception):
                    conn.close()
                conn = None
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if status in (200, 201):
                accepted[spec.idempotency_key] = json.loads(data)["id"]
                replays += status == 200
                break
            errors[str(status)] += 1
            if status == 429 or status >= 500:
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            rejected[spec.idempotency_key] = status  # 402, 4xx: not accepted, not retried
            break
    if conn is not None:
        conn.close()
    return {
        "accepted": accepted,
        "rejected": rejected,
        "gave_up": gave_up,
        "errors": dict(errors),
        "replays": replays,
        "seconds": time.time() - started,
    }


@dataclass
class ClientReport:
    submitted: int = 0
    accepted: dict[str, str] = field(default_factory=dict)  # idempotency key -> job id
    rejected: dict[str, int] = field(default_factory=dict)
    gave_up: list[str] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    replays: int = 0
    seconds: float = 0.0


def _client_process(task: tuple, results) -> None:
    results.put(client_run(task))


class Clients:
    """``processes`` client processes submitting ``specs`` through the REST API; with
    ``over_seconds`` the submits are spread evenly over that long, otherwise sent at once."""

    def __init__(self, base_url: str, specs: list[JobSpec], *, processes: int, over_seconds: float = 0.0,
                 give_up_after: float = 600.0):  # fmt: skip
        self.submitted = len(specs)
        self.give_up_after = give_up_after
        interval = over_seconds * processes / len(specs) if over_seconds and specs else 0.0
        give_up_at = time.time() + give_up_after
        # spawn, not fork: the harness holds threads and sockets a forked child must not share.
        # Plain processes, not a Pool: a Pool's terminate() can block on its queue's lock.
        context = multiprocessing.get_context("spawn")
        self.results = context.Queue()
        self.processes = [
            context.Process(
                target=_client_process, args=((base_url, specs[i::processes], interval, give_up_at), self.results),
                daemon=True,
            )
            for i in range(processes)
        ]  # fmt: skip
        for process in self.processes:
            process.start()

    def wait(self, timeout: float, *, tick: Callable[[], None] = lambda: None) -> ClientReport:
        """The clients' merged report; ``tick()`` is called every second meanwhile."""
        import queue

        end = time.monotonic() + timeout
        parts: list[dict] = []
        try:
            while len(parts) < len(self.processes):
                if time.monotonic() > end:
                    raise OutOfTime(f"the clients did not finish within {timeout:.0f}s")
                tick()
                try:
                    parts.append(self.results.get(timeout=1.0))
                except queue.Empty:
                    crashed = [p for p in self.processes if p.exitcode not in (None, 0)]
                    if crashed:
                        raise HarnessError(f"a client process exited with code {crashed[0].exitcode}") from None
        finally:
            self.close()
        report = ClientReport(submitted=self.submitted)
        for part in parts:
            report.seconds = max(report.seconds, part["seconds"])
            report.accepted.update(part["accepted"])
            report.rejected.update(part["rejected"])
            report.gave_up += part["gave_up"]
            report.errors.update(part["errors"])
            report.replays += part["replays"]
        return report

    def close(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.kill()
            process.join(timeout=5)
        self.results.close()


# --- checks ----------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    scenario: str
    submitted: int = 0
    accepted: int = 0
    in_database: int = 0
    by_status: Counter = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    double_charged: list[str] = field(default_factory=list)
    ledger_problems: list[str] = field(default_factory=list)
    reserved_after: int | None = None
    drain_seconds: float | None = None
    slowest_seconds: float | None = None  # the longest a job took from its submit to its end
    client_errors: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # scenario-specific checks that failed

    @property
    def ok(self) -> bool:
        return not (
            self.lost or self.double_charged or self.ledger_problems or self.failures or self.reserved_after != 0
        )

    def explain(self) -> str:
        lines = [f"{self.scenario}: {'ok' if self.ok else 'FAILED'}"]
        if self.lost:
            lines.append(f"  lost ({len(self.lost)}): {', '.join(self.lost[:10])}")
        if self.double_charged:
            lines.append(f"  double-charged ({len(self.double_charged)}): {', '.join(self.double_charged[:10])}")
        lines += [f"  ledger: {problem}" for problem in self.ledger_problems[:10]]
        if self.reserved_after:
            lines.append(f"  reservations left: {self.reserved_after} tokens")
        lines += [f"  {failure}" for failure in self.failures]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def active_jobs(stack: Stack, tag: str | None = None) -> int:
    if tag is None:
        rows = stack.sql("SELECT count(*) FROM inference_generationjob WHERE status IN ('queued', 'running')")
    else:
        rows = stack.sql(
            "SELECT count(*) FROM inference_generationjob WHERE status IN ('queued', 'running') "
            "AND idempotency_key LIKE %s",
            [f"{tag}-%"],
        )
    return rows[0][0]


def jobs_made(stack: Stack, tag: str) -> int:
    return stack.sql("SELECT count(*) FROM inference_generationjob WHERE idempotency_key LIKE %s", [f"{tag}-%"])[0][0]


def wait_drained(stack: Stack, *, timeout: float, tag: str | None = None) -> float | None:
    """Seconds until no job of the scenario (or, without ``tag``, none at all) is queued or
    running; None if some still were after ``timeout``. Processes that die meanwhile are
    replaced, as a supervisor would."""
    started = time.monotonic()
    end = started + timeout
    while time.monotonic() < end:
        stack.supervise()
        try:
            if active_jobs(stack, tag) == 0:
                return time.monotonic() - started
        except Exception:  # noqa: S110 - the database may be restarting; keep waiting
            pass
        time.sleep(0.5)
    return None


def messageless_jobs(stack: Stack, *, older_than: float = 30) -> list[str]:
    """Jobs queued for over ``older_than`` seconds whose task message is nowhere in the broker:
    not in a queue and not in kombu's unacknowledged set. Nothing will run them until the
    sweeper sends them again (after JOB_REQUEUE_AFTER_SECONDS, 600 s by default)."""
    import base64

    import redis

    rows = stack.sql(
        "SELECT id::text FROM inference_generationjob WHERE status = 'queued' "
        "AND enqueued_at < now() - make_interval(secs => %s)",
        [older_than],
    )
    if not rows:
        return []
    client = redis.Redis.from_url(stack.redis.url, socket_timeout=5)
    raws = list(client.hvals("unacked"))
    for key in client.scan_iter(match="gen.*"):
        if client.type(key) == b"list":
            raws += client.lrange(key, 0, -1)
    in_broker = set()
    for raw in raws:
        with contextlib.suppress(Exception):
            message = json.loads(raw)
            message = message[0] if isinstance(message, list) else message  # unacked: [message, exchange, key]
            body = message["body"]
            if message.get("properties", {}).get("body_encoding") == "base64":
                body = base64.b64decode(body)
            in_broker.add(json.loads(body)[0][0])
    return [row[0] for row in rows if row[0] not in in_broker]


def verify(
    stack: Stack, verdict: Verdict, *, like: str, clients: ClientReport | None = None, stall_limit: float = 120
) -> Verdict:
    """Of the jobs whose Idempotency-Key is LIKE ``like``: every one the clients saw accepted is
    in the database and final, each final job has exactly one usage record charging what the job
    says (by the charging rule), none holds a reservation; every ledger row agrees with its jobs;
    and no job took longer than ``stall_limit`` seconds from its submit to its end (a job the
    sweeper rescues only after ten minutes is not lost, but its customer has given up)."""
    rows = stack.sql(
        """
        SELECT j.id::text, j.idempotency_key, j.status, j.tokens_charged, j.tokens_reserved, j.prompt_tokens,
               j.completion_tokens, j.attempts,
               (SELECT count(*) FROM billing_usagerecord u WHERE u.job_id = j.id),
               (SELECT coalesce(sum(u.tokens_charged), 0) FROM billing_usagerecord u WHERE u.job_id = j.id)
        FROM inference_generationjob j WHERE j.idempotency_key LIKE %s
        """,
        [like],
    )
    if clients is None:  # every job there is, whoever submitted it
        clients = ClientReport(submitted=len(rows), accepted={row[1]: row[0] for row in rows})
    verdict.submitted = clients.submitted
    verdict.accepted = len(clients.accepted)
    verdict.client_errors.update(clients.errors)
    verdict.in_database = len(rows)
    by_key = {row[1]: row for row in rows}
    for key, job_id in clients.accepted.items():
        if key not in by_key:
            verdict.lost.append(f"{job_id} (accepted, not in the database)")
        elif by_key[key][0] != job_id:
            verdict.failures.append(f"idempotency key {key} answered job {job_id}, the database has {by_key[key][0]}")
    for job_id, _key, status, charged, reserved, prompt, completion, _attempts, usages, usage_sum in rows:
        verdict.by_status[status] += 1
        if status not in FINAL:
            verdict.lost.append(f"{job_id} (still {status})")
            if usages:
                verdict.double_charged.append(f"{job_id} ({status} but settled {usages}x)")
            continue
        if usages != 1 or usage_sum != charged:
            verdict.double_charged.append(f"{job_id} ({usages} usage records, {usage_sum} vs job {charged})")
        if charged > reserved:
            verdict.ledger_problems.append(f"job {job_id} charged {charged} > reserved {reserved}")
        # Text delivered is text charged; a failure before any text costs nothing.
        expected = {
            "succeeded": prompt + completion,
            "failed": 0 if completion == 0 else prompt + completion,
        }.get(status, charged)
        if charged != expected:
            verdict.ledger_problems.append(f"job {job_id} ({status}) charged {charged}, the rule says {expected}")
    not_accepted = [key for key in by_key if key not in clients.accepted]
    if not_accepted:
        # The server made the job but the client never heard (it gave up): still must be settled.
        verdict.notes.append(f"{len(not_accepted)} jobs made without the client hearing of it")
    if clients.rejected:
        verdict.notes.append(f"rejected: {dict(Counter(clients.rejected.values()))}")
    if clients.gave_up:
        verdict.failures.append(f"clients gave up on {len(clients.gave_up)} submits")
    slow = stack.sql(
        """
        SELECT id::text, status, attempts, extract(epoch FROM finished_at - created_at)::float
        FROM inference_generationjob WHERE idempotency_key LIKE %s AND finished_at IS NOT NULL
        ORDER BY finished_at - created_at DESC LIMIT 20
        """,
        [like],
    )
    verdict.slowest_seconds = slow[0][3] if slow else None
    stalled = [row for row in slow if row[3] > stall_limit]
    if stalled:
        listed = ", ".join(
            f"{job_id} ({status} after {seconds:.0f}s, {runs} runs)" for job_id, status, runs, seconds in stalled[:5]
        )
        count = f"{len(stalled)}{'+' if len(stalled) == len(slow) else ''}"
        verdict.failures.append(f"{count} jobs took over {stall_limit:.0f}s from submit to end: {listed}")
    verdict.ledger_problems += ledger_problems(stack)
    # What the ledger holds for these jobs: all it holds, less what other jobs still running or
    # queued hold (an earlier scenario's stuck job is that scenario's failure, not this one's).
    total = stack.sql("SELECT coalesce(sum(reserved), 0) FROM billing_quotaperiod")[0][0]
    others, held = stack.sql(
        "SELECT count(*), coalesce(sum(tokens_reserved), 0) FROM inference_generationjob "
        "WHERE status IN ('queued', 'running') AND idempotency_key NOT LIKE %s",
        [like],
    )[0]
    verdict.reserved_after = total - held
    if others:
        verdict.notes.append(f"{others} other jobs still active, holding {held} tokens (not counted here)")
    return verdict


def end_of_run(stack: Stack, *, timeout: float) -> Verdict:
    """Every job of the run, once all have had ``timeout`` seconds to end: nothing active,
    nothing reserved, every ledger row equal to its jobs' charges."""
    verdict = Verdict("end of run: every job of every scenario")
    verdict.drain_seconds = wait_drained(stack, timeout=timeout)
    return verify(stack, verdict, like="%", stall_limit=float("inf"))


def ledger_problems(stack: Stack) -> list[str]:
    """Each workspace's ledger row against its jobs and usage records: used = what the finished jobs
    charged = what the usage records say; reserved = what the active jobs reserved."""
    rows = stack.sql(
        """
        SELECT p.id, p.workspace_id, p.used, p.reserved,
               (SELECT coalesce(sum(j.tokens_charged), 0) FROM inference_generationjob j
                 WHERE j.quota_period_id = p.id AND j.status IN ('succeeded', 'failed', 'cancelled')),
               (SELECT coalesce(sum(u.tokens_charged), 0) FROM billing_usagerecord u WHERE u.quota_period_id = p.id),
               (SELECT coalesce(sum(j.tokens_reserved), 0) FROM inference_generationjob j
                 WHERE j.quota_period_id = p.id AND j.status IN ('queued', 'running'))
        FROM billing_quotaperiod p
        """
    )
    problems = []
    for _period, workspace, used, reserved, jobs_charged, usage_charged, active_reserved in rows:
        if not used == jobs_charged == usage_charged:
            problems.append(
                f"workspace {workspace}: used {used}, jobs charged {jobs_charged}, usage records {usage_charged}"
            )
        if reserved != active_reserved:
            problems.append(f"workspace {workspace}: reserved {reserved}, active jobs hold {active_reserved}")
    return problems


# --- scenarios -------------------------------------------------------------------------------------------


@dataclass
class Load:
    jobs: int
    processes: int
    over_seconds: float = 0.0
    tokens: tuple[int, int] = (2, 8)
    queues: tuple[str, ...] | None = None


def _submit(stack: Stack, load: Load, *, tag: str, seed: int, give_up_after: float) -> Clients:
    specs = job_specs(stack.accounts, load.jobs, tag=tag, seed=seed, tokens=load.tokens, queues=load.queues)
    return Clients(
        stack.base_url, specs, processes=load.processes, over_seconds=load.over_seconds, give_up_after=give_up_after
    )


def _finish(stack: Stack, verdict: Verdict, clients: Clients, *, tag: str, deadline: Deadline,
            drain_timeout: float, exits_before: int, stall_limit: float = 120) -> Verdict:  # fmt: skip
    report = clients.wait(deadline.cap(clients.give_up_after + 60), tick=stack.supervise)
    verdict.drain_seconds = wait_drained(stack, timeout=deadline.cap(drain_timeout), tag=tag)
    verify(stack, verdict, like=f"{tag}-%", clients=report, stall_limit=stall_limit)
    for exit_line in stack.unexpected_exits[exits_before:]:
        verdict.failures.append(f"exited by itself (a replacement was started): {exit_line}")
    verdict.notes.insert(0, f"submits took {report.seconds:.1f}s")
    if report.replays:
        verdict.notes.append(f"{report.replays} retries answered with the job already made")
    return verdict


def _queues_used(stack: Stack, tag: str) -> str:
    rows = stack.sql(
        "SELECT queue, count(*) FROM inference_generationjob WHERE idempotency_key LIKE %s GROUP BY queue ORDER BY 1",
        [f"{tag}-%"],
    )
    return ", ".join(f"{queue} {count}" for queue, count in rows)


def scenario_burst(stack: Stack, load: Load, *, tag: str = "burst", deadline: Deadline, drain_timeout: float = 180,
                   seed: int = 1) -> Verdict:  # fmt: skip
    """``load.jobs`` jobs from ``load.processes`` client processes at once, over every plan."""
    verdict = Verdict(f"burst: {load.jobs} jobs from {load.processes} processes")
    exits_before = len(stack.unexpected_exits)
    clients = _submit(stack, load, tag=tag, seed=seed, give_up_after=deadline.cap(600))
    # A burst queues everything at once: its last jobs wait for the ones before them.
    stall_limit = max(120.0, load.jobs / 5)
    _finish(stack, verdict, clients, tag=tag, deadline=deadline, drain_timeout=drain_timeout, exits_before=exits_before,
            stall_limit=stall_limit)  # fmt: skip
    verdict.notes.append(f"queues: {_queues_used(stack, tag)}")
    return verdict


def _in_flight(stack: Stack) -> str:
    rows = dict(
        stack.sql(
            "SELECT status, count(*) FROM inference_generationjob WHERE status IN ('queued', 'running') GROUP BY 1"
        )
    )
    return f"queued {rows.get('queued', 0)}, running {rows.get('running', 0)}"


def _workers_claiming_since(stack: Stack, since: float) -> set[str]:
    rows = stack.sql(
        "SELECT DISTINCT worker FROM inference_generationjob WHERE started_at > to_timestamp(%s) AND worker <> ''",
        [since],
    )
    claimed = {row[0] for row in rows}
    # Finished jobs keep the worker that ran them; a requeued job's earlier worker is gone anyway.
    rows = stack.sql(
        "SELECT DISTINCT worker FROM billing_usagerecord WHERE created_at > to_timestamp(%s) AND worker <> ''",
        [since],
    )
    return claimed | {row[0] for row in rows}


def scenario_restart(stack: Stack, load: Load, *, service: str, tag: str, deadline: Deadline,
                     down_seconds: float = 5.0, fault_when_queued: int = 20, drain_timeout: float = 180,
                     seed: int = 2, label: str = "mid-load") -> Verdict:  # fmt: skip
    """Restart ``service`` ("redis" or "postgres") while jobs are being submitted and run; the
    web and worker processes are left alone and must recover by themselves."""
    if service not in ("redis", "postgres"):
        raise ValueError(service)
    verdict = Verdict(f"{service} restart {label} ({down_seconds:g}s down)")
    exits_before = len(stack.unexpected_exits)
    clients = _submit(stack, load, tag=tag, seed=seed, give_up_after=deadline.cap(600))

    # Break it with a queue built up (or, if the workers keep up, half way through the submits):
    # submits, queued jobs and running batches are all in flight.
    def ready_to_break() -> bool:
        queued = stack.sql(
            "SELECT count(*) FROM inference_generationjob WHERE status = 'queued' AND idempotency_key LIKE %s",
            [f"{tag}-%"],
        )[0][0]
        return queued >= fault_when_queued or jobs_made(stack, tag) >= load.jobs // 2

    poll_until(ready_to_break, timeout=deadline.cap(120), every=0.1)
    in_flight = _in_flight(stack)
    before = list(stack.live_workers())
    fault_at = time.time()
    if service == "redis":
        stack.redis.restart(down_seconds)
    else:
        stack.pg.restart(down_seconds)
    back_at = time.time()
    verdict.notes.append(f"in flight at the fault: {in_flight}; back after {back_at - fault_at:.1f}s")
    _finish(stack, verdict, clients, tag=tag, deadline=deadline, drain_timeout=drain_timeout, exits_before=exits_before)
    # Every worker that lived through the fault must be taking jobs again (one that never
    # reconnected to the broker would sit idle while its heartbeat says it is fine). Only
    # meaningful with enough jobs afterwards.
    if verdict.lost:
        stranded = messageless_jobs(stack)
        if stranded:
            verdict.notes.append(
                f"{len(stranded)} queued jobs have no task message in the broker: {', '.join(stranded[:5])}"
            )
    claimed = _workers_claiming_since(stack, back_at)
    survivors = {w.db_name for w in before if w.alive()}
    verdict.notes.append(
        f"workers that lived through the fault: {len(survivors)}/{len(before)}, "
        f"taking jobs again: {len(survivors & claimed)}/{len(survivors)}"
    )
    after_fault_jobs = stack.sql(
        "SELECT count(*) FROM inference_generationjob WHERE idempotency_key LIKE %s AND started_at > to_timestamp(%s)",
        [f"{tag}-%", back_at],
    )[0][0]
    if after_fault_jobs >= 8 * len(before) and survivors - claimed:
        verdict.failures.append(f"workers that took no job after the fault: {', '.join(sorted(survivors - claimed))}")
    return verdict


def scenario_worker_kill(stack: Stack, load: Load, *, tag: str = "kill", deadline: Deadline,
                         requeue_limit: float = 120, drain_timeout: float = 180, seed: int = 3) -> Verdict:  # fmt: skip
    """A gen.low backlog; SIGKILL a worker while it holds a batch; a supervisor starts a
    replacement; the sweeper must requeue the dead worker's jobs and they must finish within
    ``requeue_limit`` seconds."""
    verdict = Verdict(f"worker SIGKILL mid-batch, gen.low backlog of {load.jobs}")
    exits_before = len(stack.unexpected_exits)
    clients = _submit(stack, load, tag=tag, seed=seed, give_up_after=deadline.cap(600))

    def victim(backlog: int):
        # A worker running several of this scenario's jobs while at least ``backlog`` wait.
        rows = stack.sql(
            """
            SELECT worker, count(*) FROM inference_generationjob
            WHERE status = 'running' AND idempotency_key LIKE %s GROUP BY worker ORDER BY count(*) DESC
            """,
            [f"{tag}-%"],
        )
        queued = stack.sql(
            "SELECT count(*) FROM inference_generationjob WHERE status = 'queued' AND queue = 'gen.low'"
        )[0][0]
        if rows and rows[0][1] >= min(2, stack.config.concurrency) and queued >= backlog:
            for worker in stack.live_workers():
                if worker.db_name == rows[0][0]:
                    return worker, queued
        return None

    # Best with a real backlog (a quarter of the load waiting); settle for less if the workers
    # keep up with the submits.
    found = poll_until(lambda: victim(load.jobs // 4), timeout=deadline.cap(60), every=0.1) or poll_until(
        lambda: victim(1), timeout=deadline.cap(60), every=0.1
    )
    if not found:
        clients.close()
        raise HarnessError("no worker held a batch of the backlog within 120 s")
    worker, queued = found
    stack.kill_worker(worker)
    killed_at = time.monotonic()
    orphans = [
        row[0]
        for row in stack.sql(
            "SELECT id::text FROM inference_generationjob WHERE status = 'running' AND worker = %s", [worker.db_name]
        )
    ]
    replacement = stack.start_worker(wait=False)  # as a supervisor would
    verdict.notes.append(f"killed {worker.db_name} holding {len(orphans)} running jobs, gen.low queued {queued}")

    def orphans_final():
        rows = stack.sql(
            "SELECT count(*) FROM inference_generationjob WHERE id::text = ANY(%s) AND status IN "
            "('succeeded', 'failed', 'cancelled')",
            [orphans],
        )
        return rows[0][0] == len(orphans)

    finished = poll_until(orphans_final, timeout=deadline.cap(max(requeue_limit * 2, 180)), every=0.2)
    requeue_seconds = time.monotonic() - killed_at
    stack.wait_worker_ready(replacement, timeout=deadline.cap(180))
    _finish(stack, verdict, clients, tag=tag, deadline=deadline, drain_timeout=drain_timeout, exits_before=exits_before)
    rows = stack.sql(
        "SELECT status, attempts, count(*) FROM inference_generationjob WHERE id::text = ANY(%s) GROUP BY 1, 2",
        [orphans],
    )
    summary = ", ".join(f"{count} {status} after {attempts} runs" for status, attempts, count in rows)
    if finished:
        verdict.notes.append(f"its jobs finished {requeue_seconds:.1f}s after the kill ({summary})")
        if requeue_seconds > requeue_limit:
            verdict.failures.append(
                f"the killed worker's jobs took {requeue_seconds:.1f}s to finish (limit {requeue_limit:.0f}s)"
            )
    else:
        verdict.failures.append(f"the killed worker's jobs were not all finished after {requeue_seconds:.0f}s")
    if not orphans:
        verdict.failures.append("the killed worker held no running job at the kill (harness timing)")
    not_requeued = [status for status, attempts, _count in rows if attempts < 2 and status == "succeeded"]
    if not_requeued:
        verdict.failures.append("a killed worker's job succeeded without a second run")
    return verdict


def _sleep_supervising(stack: Stack, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        stack.supervise()
        time.sleep(max(0.0, min(1.0, end - time.monotonic())))


def scenario_soak(stack: Stack, load: Load, *, minutes: float, tag: str = "soak", deadline: Deadline,
                  kill_every: tuple[float, float] = (30, 90), drain_timeout: float = 180, seed: int = 4,
                  log: Callable[[str], None] = lambda message: None) -> Verdict:  # fmt: skip
    """Steady load for ``minutes`` while every 30-90 s a random worker is SIGKILLed (as soon as
    it holds a running job) and a replacement started."""
    rng = random.Random(seed)
    verdict = Verdict(f"soak {minutes:g} min, a worker SIGKILLed every {kill_every[0]:g}-{kill_every[1]:g}s")
    exits_before = len(stack.unexpected_exits)
    load.over_seconds = minutes * 60
    clients = _submit(stack, load, tag=tag, seed=seed, give_up_after=deadline.cap(minutes * 60 + 300))
    end = time.monotonic() + minutes * 60
    kills = taken = 0
    while True:
        pause = rng.uniform(*kill_every)
        if time.monotonic() + pause >= end:
            break
        _sleep_supervising(stack, pause)
        deadline.check("the next kill of the soak")
        live = stack.live_workers()
        if not live:
            raise HarnessError("no live worker to kill")
        worker = rng.choice(live)

        def running_on(worker=worker) -> int:
            return stack.sql(
                "SELECT count(*) FROM inference_generationjob WHERE status = 'running' AND worker = %s",
                [worker.db_name],
            )[0][0]

        # Killed as soon as it holds work (within 10 s), so that the kill takes jobs with it.
        running = poll_until(running_on, timeout=10, every=0.05) or 0
        stack.kill_worker(worker)
        kills += 1
        taken += running
        log(f"soak: killed {worker.db_name} ({running} running); starting a replacement")
        stack.wait_worker_ready(stack.start_worker(wait=False), timeout=deadline.cap(180))
    _sleep_supervising(stack, end - time.monotonic())
    stranded = messageless_jobs(stack)
    if stranded:
        verdict.notes.append(
            f"{len(stranded)} jobs queued with no task message left in the broker (taken by a killed worker "
            f"before it recorded them): {', '.join(stranded[:5])}"
        )
    _finish(stack, verdict, clients, tag=tag, deadline=deadline, drain_timeout=drain_timeout, exits_before=exits_before)
    rows = stack.sql(
        "SELECT count(*) FILTER (WHERE attempts > 1), count(*) FILTER (WHERE attempts > 1 AND status = 'failed') "
        "FROM inference_generationjob WHERE idempotency_key LIKE %s",
        [f"{tag}-%"],
    )
    verdict.notes.append(
        f"{kills} kills taking {taken} running jobs; {rows[0][0]} jobs ran more than once, {rows[0][1]} of them failed"
    )
    return verdict


# --- the table -------------------------------------------------------------------------------------------


def format_table(verdicts: list[Verdict]) -> str:
    header = (
        "scenario", "submitted", "accepted", "succeeded", "failed", "cancelled", "lost", "double-charged",
        "ledger", "reserved after", "drain s", "slowest s", "client errors",
    )  # fmt: skip
    rows = []
    for v in verdicts:
        errors = ", ".join(f"{k} x{n}" for k, n in sorted(v.client_errors.items())) or "-"
        rows.append((
            v.scenario, str(v.submitted), str(v.accepted), str(v.by_status["succeeded"]), str(v.by_status["failed"]),
            str(v.by_status["cancelled"]), str(len(v.lost)), str(len(v.double_charged)),
            "ok" if not v.ledger_problems else f"BAD ({len(v.ledger_problems)})",
            "-" if v.reserved_after is None else str(v.reserved_after),
            "-" if v.drain_seconds is None else f"{v.drain_seconds:.1f}",
            "-" if v.slowest_seconds is None else f"{v.slowest_seconds:.1f}", errors,
        ))  # fmt: skip
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * width for width in widths))
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    lines.append("")
    for v in verdicts:
        lines.append(v.explain())
    return "\n".join(lines)
