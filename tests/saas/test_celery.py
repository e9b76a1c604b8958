from __future__ import annotations

import pytest

from saas.celery import app as celery_app
from saas.tasks import ping


def test_celery_speaks_json_only_and_acks_late():
    conf = celery_app.conf

    assert conf.task_serializer == "json"
    assert conf.accept_content == ["json"]
    assert conf.task_acks_late is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit
    assert conf.task_soft_time_limit < conf.task_time_limit
    assert not conf.task_always_eager


def test_nothing_is_scheduled_through_the_broker():
    # A scheduled message would wait behind the generation backlog: `manage.py maintenance` runs
    # the sweeper and retention instead (tests/saas/test_maintenance.py).
    assert not celery_app.conf.beat_schedule


@pytest.mark.django_db(transaction=True)
def test_a_task_makes_the_round_trip_through_a_real_worker_process(celery_worker):
    results = [ping.delay() for _ in range(5)]

    assert [r.get(timeout=30) for r in results] == ["pong"] * 5
    assert all(r.successful() for r in results)
