"""The API's own cost: POST /api/v1/jobs (key auth + plan + rate limit + quota + insert + enqueue)
next to GET /api/v1/ping (the same key auth and nothing else), on one uvicorn server, in one run.

Usage:  .venv/bin/python bench/api.py [N]
Uses DATABASE_URL and REDIS_URL when set; otherwise SQLite in var/ and an embedded Redis.
No worker runs: jobs stay queued, which is the path being measured.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py is named like the standard library's queue module: keep this folder off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import http.client
import json
import os
import statistics
import subprocess
import threading
import time

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings")
os.environ.setdefault("DATABASE_URL", f"sqlite:///{ROOT / 'var' / 'bench-api.sqlite3'}")
os.environ.setdefault("INKWELL_EMBEDDED_REDIS_PORT", "6396")

import django

django.setup()

from django.conf import settings
from django.core.management import call_command

from accounts.apikeys import api_key_create
from accounts.models import User
from accounts.workspaces import workspace_personal
from billing.models import Plan
from inference.models import GenerationJob
from saas.embedded import EmbeddedRedis, die_with_parent, port_is_open

PORT = 8797
JOB_BODY = json.dumps({"prompt": "Hello", "max_new_tokens": 1})


def setup_key() -> str:
    call_command("migrate", verbosity=0)
    call_command("seed", verbosity=0)
    Plan.objects.update(is_default=False)
    Plan.objects.update_or_create(
        slug="bench-api",
        defaults={
            "name": "Bench API", "is_default": True, "api_access": True, "monthly_token_allowance": 10**12,
            "max_new_tokens": 16, "max_prompt_tokens": 1000, "max_concurrent_jobs": 10**6,
            "requests_per_minute": 10**7, "allowed_models": list(settings.INFERENCE_MODELS),
        },
    )  # fmt: skip
    user, _ = User.objects.get_or_create(email="bench-api@inkwell.local")
    GenerationJob.objects.filter(user=user).delete()
    return api_key_create(user=user, workspace=workspace_personal(user), name="bench")[1]


def call(conn: http.client.HTTPConnection, method: str, path: str, key: str) -> float:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    start = time.perf_counter()
    conn.request(method, path, body=JOB_BODY if method == "POST" else None, headers=headers)
    response = conn.getresponse()
    response.read()
    if response.status >= 300:
        raise RuntimeError(f"{method} {path}: {response.status}")
    return (time.perf_counter() - start) * 1000


def latencies(method: str, path: str, key: str, n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    return [call(conn, method, path, key) for _ in range(n)]


def throughput(method: str, path: str, key: str, threads: int = 4, seconds: float = 8.0) -> float:
    done = []
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
        count = 0
        while time.perf_counter() < deadline:
            call(conn, method, path, key)
            count += 1
        done.append(count)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(done) / seconds


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(n: int) -> None:
    embedded = None
    if settings.REDIS_EMBEDDED:
        embedded = EmbeddedRedis(port=settings.EMBEDDED_REDIS_PORT)
        embedded.start()
    key = setup_key()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "saas.asgi:application", "--port", str(PORT), "--lifespan", "off",
         "--log-level", "warning", "--no-access-log"],
        cwd=ROOT, env={**os.environ, "REDIS_URL": settings.REDIS_URL}, preexec_fn=die_with_parent,
    )  # fmt: skip
    try:
        for _ in range(100):
            if port_is_open(PORT):
                break
            time.sleep(0.1)
        latencies("GET", "/api/v1/ping", key, 50)  # warm up both paths
        latencies("POST", "/api/v1/jobs", key, 50)
        ping = latencies("GET", "/api/v1/ping", key, n)
        jobs = latencies("POST", "/api/v1/jobs", key, n)
        ping_rps = throughput("GET", "/api/v1/ping", key)
        jobs_rps = throughput("POST", "/api/v1/jobs", key)
    finally:
        server.terminate()
        server.wait()
        if embedded is not None:
            embedded.stop()
    database = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    print(f"database: {database}, one uvicorn process, {n} sequential requests each, 4 threads for throughput")
    print(f"{'endpoint':<44}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}")
    for label, samples, rps in (
        ("GET /api/v1/ping (key auth only)", ping, ping_rps),
        ("POST /api/v1/jobs (full submit path)", jobs, jobs_rps),
    ):
        print(f"{label:<44}{statistics.median(samples):>9.2f}{pct(samples, 0.99):>9.2f}{rps:>9.1f}")
    print(
        f"added by the submit path: p50 {statistics.median(jobs) - statistics.median(ping):.2f} ms, "
        f"p99 {pct(jobs, 0.99) - pct(ping, 0.99):.2f} ms; throughput ratio {jobs_rps / ping_rps:.2f}"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
