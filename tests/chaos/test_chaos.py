"""Load and faults against a private stack, checked the way a customer would: no accepted job
lost, each settled exactly once, every ledger row equal to its jobs' charges, nothing left
reserved. The same harness as `bench/chaos.py`, at a size CI can afford."""

from __future__ import annotations

import pytest

from tests.chaos.harness import Deadline, Load, scenario_burst, scenario_restart, scenario_worker_kill

pytestmark = pytest.mark.chaos


def test_a_burst_through_the_api_loses_nothing_and_settles_each_job_once(stack):
    verdict = scenario_burst(stack, Load(60, processes=4), tag="t-burst", deadline=Deadline(150), drain_timeout=90)

    assert verdict.ok, verdict.explain()
    assert (verdict.accepted, verdict.in_database, verdict.by_status["succeeded"]) == (60, 60, 60)
    queues = dict(
        stack.sql(
            "SELECT queue, count(*) FROM inference_generationjob WHERE idempotency_key LIKE %s GROUP BY 1",
            ["t-burst-%"],
        )
    )
    assert queues == {"gen.high": 20, "gen.normal": 20, "gen.low": 20}


def test_a_worker_killed_mid_batch_has_its_jobs_requeued_finished_and_charged_once(stack):
    verdict = scenario_worker_kill(
        stack,
        Load(40, processes=4, tokens=(192, 256), queues=("gen.low",)),
        tag="t-kill",
        deadline=Deadline(240),
        requeue_limit=120,
        drain_timeout=120,
    )

    assert verdict.ok, verdict.explain()
    assert verdict.by_status["succeeded"] == 40
    requeued = stack.sql(
        "SELECT count(*) FROM inference_generationjob WHERE idempotency_key LIKE %s AND attempts = 2", ["t-kill-%"]
    )[0][0]
    assert requeued >= 2  # the killed worker's batch ran again


def test_a_redis_restart_with_a_queue_backlogged_loses_no_job_and_charges_none_twice(stack):
    # Long jobs faster submitted than run: Redis dies with submits in flight, full batches and a
    # queue, and comes back empty (the sweeper must send the forgotten queue again).
    verdict = scenario_restart(
        stack,
        Load(80, processes=4, tokens=(192, 256)),
        service="redis",
        tag="t-redis",
        deadline=Deadline(240),
        down_seconds=3,
        fault_when_queued=10,
        drain_timeout=120,
    )

    assert verdict.ok, verdict.explain()
    assert verdict.accepted == 80


def test_workers_holding_jobs_and_waiting_on_the_broker_live_through_a_redis_restart(stack):
    # Jobs at a pace the workers keep up with: when Redis dies they hold running jobs and wait
    # on the broker for more. They must reconnect by themselves, not exit.
    verdict = scenario_restart(
        stack,
        Load(60, processes=4, over_seconds=10, tokens=(64, 256)),
        service="redis",
        tag="t-redis-idle",
        deadline=Deadline(240),
        down_seconds=3,
        fault_when_queued=10**6,
        drain_timeout=120,
    )

    assert verdict.ok, verdict.explain()
    assert verdict.accepted == 60
