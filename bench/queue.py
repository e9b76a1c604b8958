"""The queue alone: submit-to-claim latency and jobs/s through Celery + Redis with a no-op engine,
next to the same services called directly in one process (no broker).

Usage:  .venv/bin/python bench/queue.py [N]
Uses DATABASE_URL and REDIS_URL when set; otherwise SQLite in var/ and an embedded Redis.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the standard library's queue module: keep its folder off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import os
import statistics
import subprocess
import threading
import time

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings")
os.environ.setdefault("DATABASE_URL", f"sqlite:///{ROOT / 'var' / 'bench-queue.sqlite3'}")
os.environ.setdefault("INKWELL_EMBEDDED_REDIS_PORT", "6394")
os.environ["INFERENCE_ENGINE"] = "noop"

import django

django.setup()

from django.conf import settings
from django.core.management import call_command

from accounts.models import Membership, User
from accounts.workspaces import membership_personal
from billing.models import Plan
from inference import executor, services
from inference.models import FINAL_STATUSES, GenerationJob
from saas.celery import ALL_QUEUES
from saas.embedded import EmbeddedRedis, die_with_parent


def ms(seconds: float) -> float:
    return seconds * 1000


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def setup_member() -> Membership:
    call_command("migrate", verbosity=0)
    call_command("seed", verbosity=0)
    plan, _ = Plan.objects.update_or_create(
        slug="bench",
        defaults={
            "name": "Bench",
            "monthly_token_allowance": 10**12,
            "max_new_tokens": 16,
            "max_prompt_tokens": 1000,
            "max_concurrent_jobs": 10**6,
            "requests_per_minute": 10**6,
            "allowed_models": list(settings.INFERENCE_MODELS),
        },
    )
    Plan.objects.filter(is_default=True).exclude(pk=plan.pk).update(is_default=False)
    Plan.objects.filter(pk=plan.pk).update(is_default=True)
    user, _ = User.objects.get_or_create(email="bench@inkwell.local")
    GenerationJob.objects.filter(user=user).delete()
    return membership_personal(user)


def wait_final(ids: list, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while GenerationJob.objects.filter(pk__in=ids).exclude(status__in=FINAL_STATUSES).exists():
        if time.monotonic() > deadline:
            raise TimeoutError("jobs did not finish")
        time.sleep(0.005)


def claim_latencies(ids: list) -> list[float]:
    rows = GenerationJob.objects.filter(pk__in=ids).values_list("created_at", "started_at")
    return [ms((started - created).total_seconds()) for created, started in rows]


def through_celery(member: Membership, n: int) -> tuple[list[float], float]:
    ids = []
    for _ in range(n):  # one at a time: latency of an idle system
        job = services.job_submit(member=member, prompt="Hello", max_new_tokens=1)
        wait_final([job.pk])
        ids.append(job.pk)
    latencies = claim_latencies(ids)
    burst: list = []
    lock = threading.Lock()

    def submit_many(count: int) -> None:
        for _ in range(count):
            job = services.job_submit(member=member, prompt="Hello", max_new_tokens=1)
            with lock:
                burst.append(job.pk)

    start = time.perf_counter()
    threads = [threading.Thread(target=submit_many, args=(n // 4,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_final(burst)
    return latencies, len(burst) / (time.perf_counter() - start)


def direct(member: Membership, n: int) -> tuple[list[float], float]:
    services.job_enqueue = lambda **kwargs: None  # no broker: the caller runs the job itself
    ids = []
    start = time.perf_counter()
    for _ in range(n):
        job = services.job_submit(member=member, prompt="Hello", max_new_tokens=1)
        claimed = services.job_claim(job_id=job.pk, worker="direct")
        services.job_finish(job=claimed, outcome=executor.execute(claimed))
        ids.append(job.pk)
    return claim_latencies(ids), n / (time.perf_counter() - start)


def main(n: int) -> None:
    embedded = None
    if settings.REDIS_EMBEDDED:
        embedded = EmbeddedRedis(port=settings.EMBEDDED_REDIS_PORT)
        embedded.start()
    member = setup_member()
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "saas", "worker", "--pool", "threads",
         "--concurrency", str(settings.WORKER_CONCURRENCY), "--queues", ",".join(ALL_QUEUES),
         "--loglevel", "WARNING", "--hostname", "bench@%h", "--without-mingle", "--without-gossip"],
        cwd=ROOT, preexec_fn=die_with_parent,
    )  # fmt: skip
    try:
        time.sleep(4)  # worker start-up
        services.job_submit(member=member, prompt="warm-up", max_new_tokens=1)
        celery_latency, celery_rate = through_celery(member, n)
    finally:
        worker.terminate()
        worker.wait()
    direct_latency, direct_rate = direct(member, n)
    if embedded is not None:
        embedded.stop()
    database = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    broker = "embedded redis-server" if embedded else settings.REDIS_URL.split("@")[-1]
    print("submit-to-claim: from the job's insert to its claim, both as the database recorded them")
    print(f"database: {database}, broker: {broker}, {n} jobs each way, no-op engine")
    print(f"{'path':<34}{'submit-to-claim p50':>21}{'p99':>10}{'jobs/s':>10}")
    for label, latency, rate in (
        ("Celery + Redis (real worker)", celery_latency, celery_rate),
        ("direct function call", direct_latency, direct_rate),
    ):
        print(f"{label:<34}{statistics.median(latency):>18.2f} ms{pct(latency, 0.99):>7.2f} ms{rate:>10.1f}")
    print(f"ratio direct/Celery jobs/s: {direct_rate / celery_rate:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
