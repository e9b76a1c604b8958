from __future__ import annotations

from datetime import timedelta

import pytest
import redis
from django.utils import timezone

from inference.models import Worker
from saas.celery import app as celery_app
from saas.maintenance import SWEEP_MARK_KEY, sweep_mark
from tests.support import wait_until


def _fresh_worker(**overrides) -> Worker:
    now = timezone.now()
    fields = {"name": "w1/1", "hostname": "w1", "pid": 1, "started_at": now, "last_heartbeat_at": now}
    fields.update(overrides)
    return Worker.objects.create(**fields)


@pytest.fixture
def swept(settings):
    """A maintenance process has just finished a sweep."""
    sweep_mark()
    yield
    redis.Redis.from_url(settings.REDIS_URL).delete(SWEEP_MARK_KEY)


@pytest.mark.django_db
def test_healthz_is_ok_when_database_broker_a_worker_and_the_sweeper_are_up(client, swept):
    _fresh_worker()

    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["down"] == []


@pytest.mark.django_db
def test_healthz_names_the_broker_when_it_is_unreachable(client, monkeypatch, swept):
    _fresh_worker()
    monkeypatch.setattr(celery_app.conf, "broker_url", "redis://127.0.0.1:9/0")

    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["down"] == ["broker"]
    assert "broker unreachable" in body["checks"]["broker"]["error"]
    assert body["checks"]["database"]["ok"] is True


@pytest.mark.django_db
def test_healthz_names_the_worker_when_its_heartbeat_is_stale(client, swept):
    _fresh_worker(last_heartbeat_at=timezone.now() - timedelta(minutes=5))

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["down"] == ["worker"]
    assert response.json()["checks"]["worker"]["error"] == "no worker has sent a heartbeat recently"


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_process_reports_its_heartbeat(client, celery_worker, swept):
    wait_until(lambda: Worker.objects.filter(pid=celery_worker.pid).exists(), timeout=15, what="heartbeat")

    response = client.get("/healthz")

    assert response.status_code == 200, response.json()
    assert response.json()["checks"]["worker"] == {"ok": True}


@pytest.mark.django_db
def test_healthz_names_maintenance_when_no_sweep_has_finished_lately(client, settings):
    _fresh_worker()
    settings.MAINTENANCE_STALE_SECONDS = 1
    sweep_mark()  # kept for MAINTENANCE_STALE_SECONDS only
    fresh = client.get("/healthz")
    assert fresh.status_code == 200 and fresh.json()["down"] == []

    wait_until(lambda: client.get("/healthz").status_code == 503, timeout=5, what="the sweep to be stale")

    body = client.get("/healthz").json()
    assert body["down"] == ["maintenance"]
    assert "manage.py maintenance" in body["checks"]["maintenance"]["error"]


@pytest.mark.django_db
def test_readyz_is_ok_for_the_web_while_the_workers_and_the_sweeper_are_down(client, settings):
    # No worker row and no sweep mark: /healthz is down, but this web process can serve.
    settings.MAINTENANCE_STALE_SECONDS = 1

    ready = client.get("/readyz")
    health = client.get("/healthz")

    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "down": [], "checks": {"database": {"ok": True}, "broker": {"ok": True}}}
    assert health.status_code == 503 and set(health.json()["down"]) >= {"worker"}


@pytest.mark.django_db
def test_readyz_names_the_broker_when_it_is_unreachable(client, monkeypatch):
    monkeypatch.setattr(celery_app.conf, "broker_url", "redis://127.0.0.1:9/0")

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["down"] == ["broker"]
    assert "broker unreachable" in response.json()["checks"]["broker"]["error"]
