from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from inference.models import Worker
from saas.celery import app as celery_app
from tests.support import wait_until


def _fresh_worker(**overrides) -> Worker:
    now = timezone.now()
    fields = {"name": "w1/1", "hostname": "w1", "pid": 1, "started_at": now, "last_heartbeat_at": now}
    fields.update(overrides)
    return Worker.objects.create(**fields)


@pytest.mark.django_db
def test_healthz_is_ok_when_database_broker_and_a_worker_are_up(client):
    _fresh_worker()

    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["down"] == []


@pytest.mark.django_db
def test_healthz_names_the_broker_when_it_is_unreachable(client, monkeypatch):
    _fresh_worker()
    monkeypatch.setattr(celery_app.conf, "broker_url", "redis://127.0.0.1:9/0")

    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["down"] == ["broker"]
    assert "broker unreachable" in body["checks"]["broker"]["error"]
    assert body["checks"]["database"]["ok"] is True


@pytest.mark.django_db
def test_healthz_names_the_worker_when_its_heartbeat_is_stale(client):
    _fresh_worker(last_heartbeat_at=timezone.now() - timedelta(minutes=5))

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["down"] == ["worker"]


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_process_reports_its_heartbeat(client, celery_worker):
    wait_until(lambda: Worker.objects.filter(pid=celery_worker.pid).exists(), timeout=15, what="heartbeat")

    response = client.get("/healthz")

    assert response.status_code == 200, response.json()
