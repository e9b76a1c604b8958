"""A database dump or a copy of Redis reveals no customer text: unique markers go through a real
worker, the real database and Redis, then every table is dumped (pg_dump) and every Redis key read,
and the markers are nowhere. The user still reads them on the page and through the API."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection

from accounts.workspaces import membership_personal
from billing.services.ledger import quota_reserve
from inference import streams
from inference.models import JobStatus
from inference.outcome import JobOutcome
from inference.services import job_claim, job_finish, job_submit
from tests.factories import ApiKeyFactory, JobFactory
from tests.inference.helpers import streamed_text, wait_until_final

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]


def _markers() -> dict[str, str]:
    return {what: f"marker-{what}-{secrets.token_hex(6)}" for what in ("prompt", "chat", "output")}


def _redis_contents() -> bytes:
    """Every value in this test run's Redis database, read by type."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    seen = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            seen.append(client.get(key) or b"")
        elif kind == b"stream":
            seen += [b"%s=%s" % item for _, fields in client.xrange(key) for item in fields.items()]
        elif kind == b"list":
            seen += client.lrange(key, 0, -1)
        elif kind == b"hash":
            seen += [b"%s=%s" % item for item in client.hgetall(key).items()]
        elif kind in (b"set", b"zset"):
            seen += list(client.smembers(key)) if kind == b"set" else client.zrange(key, 0, -1)
        seen.append(key)
    return b"\n".join(seen)


def _postgres_dump() -> bytes:
    db = settings.DATABASES["default"]
    dump = subprocess.run(
        ["pg_dump", "--data-only", "-h", db["HOST"] or "127.0.0.1", "-p", str(db["PORT"] or 5432),
         "-U", db["USER"] or "postgres", connection.settings_dict["NAME"]],
        capture_output=True, check=True, timeout=120,
    )  # fmt: skip
    return dump.stdout


@pytest.mark.skipif(connection.vendor != "postgresql", reason="pg_dump of the PostgreSQL database")
def test_no_marker_in_a_postgres_dump_or_in_redis_yet_the_user_reads_them(celery_worker, subscriber, client):
    marks = _markers()
    member = membership_personal(subscriber)
    # Through the real worker: a prompt, and a chat whose turns hold a marker.
    prompted = job_submit(member=member, prompt=f"{marks['prompt']} once upon a time", max_new_tokens=24,
                          temperature=0)  # fmt: skip
    chatted = job_submit(member=member, messages=[{"role": "user", "content": marks["chat"]}], max_new_tokens=8)
    prompted, chatted = wait_until_final(prompted), wait_until_final(chatted)
    assert prompted.status == chatted.status == JobStatus.SUCCEEDED
    generated = prompted.output_text  # the model's own words are customer text too
    assert len(generated) >= 12 and streamed_text(prompted) == generated
    # A random-weights model cannot be told to say a marker: this job's output goes through the
    # worker's own writing path (its stream, then job_finish).
    quota_reserve(period=prompted.quota_period, tokens=20, user=subscriber)
    said = JobFactory(user=subscriber, prompt="tell me", quota_period=prompted.quota_period, tokens_reserved=20)
    said = job_claim(job_id=said.pk, worker="test-writer")
    streams.publish_start(said.pk, attempt=1)
    streams.publish_delta(said, marks["output"])
    job_finish(job=said, outcome=JobOutcome(text=marks["output"], completion_tokens=3, finish_reason="stop"))

    dump, cache = _postgres_dump(), _redis_contents()
    assert b"marker-" not in dump.lower() and generated.encode() not in dump
    assert b"marker-" not in cache.lower() and generated.encode() not in cache
    assert b"once upon a time" not in dump.lower()
    assert len(dump) > 10_000  # a real dump of real rows, not an empty file

    client.force_login(subscriber)
    assert marks["prompt"] in client.get(f"/jobs/{prompted.pk}/").content.decode()
    assert marks["chat"] in client.get(f"/jobs/{chatted.pk}/").content.decode()
    assert marks["output"] in client.get(f"/jobs/{said.pk}/").content.decode()
    assert streamed_text(said) == marks["output"]
    key = ApiKeyFactory(user=subscriber)
    api = client.get(f"/api/v1/jobs/{said.pk}", HTTP_AUTHORIZATION=f"Bearer {key.raw}").json()
    assert (api["prompt"], api["text"]) == ("tell me", marks["output"])
    api = client.get(f"/api/v1/jobs/{chatted.pk}", HTTP_AUTHORIZATION=f"Bearer {key.raw}").json()
    assert api["messages"] == [{"role": "user", "content": marks["chat"]}]


SQLITE_SCRIPT = """
import django, sys
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from accounts.models import User
from accounts.workspaces import membership_personal, workspace_personal
from billing.models import QuotaPeriod
from inference.models import GenerationJob
from django.utils import timezone
from datetime import timedelta
user = User.objects.create_user(email="sqlite@example.com", password="x" * 12)
workspace = workspace_personal(user)
start = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
period = QuotaPeriod.objects.create(workspace=workspace, period_start=start, period_end=start + timedelta(days=31),
                                    allowance=1000)
job = GenerationJob.objects.create(user=user, workspace=workspace, model="inkwell-tiny", prompt=sys.argv[1],
                                   output_text=sys.argv[2], messages=[{"role": "user", "content": sys.argv[1]}],
                                   max_new_tokens=5, quota_period=period, tokens_reserved=10, queue="gen.normal",
                                   plan_slug="free")
job = GenerationJob.objects.get(pk=job.pk)
print(job.prompt == sys.argv[1] and job.output_text == sys.argv[2])
"""


def test_no_marker_in_the_sqlite_file(tmp_path):
    """The embedded default (`make run`) stores in SQLite: the file's bytes hold no customer text."""
    marks = _markers()
    database = tmp_path / "inkwell.sqlite3"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{database}", "DJANGO_SETTINGS_MODULE": "saas.settings"}
    run = subprocess.run(
        [sys.executable, "-c", SQLITE_SCRIPT, marks["prompt"], marks["output"]],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "True"  # read back in clear through the model
    stored = b"".join(path.read_bytes() for path in tmp_path.iterdir())  # the file, and any journal
    assert len(stored) > 50_000 and b"sqlite format 3" in stored.lower()
    assert b"marker-" not in stored.lower(), json.dumps(marks)
