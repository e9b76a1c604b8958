"""Broker round-trip: one no-op Celery task sent and its result received, through a real worker.

Usage:  .venv/bin/python bench/broker.py [N]
With REDIS_URL set it measures that Redis; without, the embedded Redis that `make run` uses.
Prints p50/p95/p99 of the task round-trip and, for scale, of a bare Redis PING.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py is named like the standard library's queue module: keep this folder off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import os
import statistics
import subprocess
import time

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings")

import django

django.setup()

import redis
from django.conf import settings
from django.core.management import call_command

from saas.celery import ALL_QUEUES
from saas.embedded import EmbeddedRedis, die_with_parent
from saas.tasks import ping


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return statistics.median(ordered), pick(0.95), pick(0.99)


def main(n: int) -> None:
    embedded = None
    if settings.REDIS_EMBEDDED:
        embedded = EmbeddedRedis(port=settings.EMBEDDED_REDIS_PORT)
        embedded.start()
    call_command("migrate", verbosity=0)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "saas", "worker", "--pool", "threads", "--concurrency", "1",
         "--queues", ",".join(ALL_QUEUES), "--loglevel", "WARNING", "--hostname", "bench@%h"],
        preexec_fn=die_with_parent,
    )  # fmt: skip
    try:
        for _ in range(200):
            try:
                if ping.delay().get(timeout=1) == "pong":
                    break
            except Exception:  # noqa: S112 - worker still starting
                continue
        for _ in range(20):  # warm-up
            ping.delay().get(timeout=10)
        task_rtt = []
        for _ in range(n):
            start = time.perf_counter()
            ping.delay().get(timeout=10)
            task_rtt.append((time.perf_counter() - start) * 1000)
        client = redis.Redis.from_url(settings.REDIS_URL)
        ping_rtt = []
        for _ in range(n):
            start = time.perf_counter()
            client.ping()
            ping_rtt.append((time.perf_counter() - start) * 1000)
    finally:
        worker.terminate()
        worker.wait()
        if embedded is not None:
            embedded.stop()
    where = "embedded redis-server" if embedded else settings.REDIS_URL.split("@")[-1]
    print(f"broker: {where}  ({n} sequential round-trips)")
    print(f"{'measure':<28}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}")
    for label, samples in (("task round-trip (worker)", task_rtt), ("redis PING", ping_rtt)):
        p50, p95, p99 = percentiles(samples)
        print(f"{label:<28}{p50:>10.2f}{p95:>10.2f}{p99:>10.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
