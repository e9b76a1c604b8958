from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

from billing.models import MemberQuota, QuotaPeriod
from inference.catalog import prompt_token_ids
from inference.models import GenerationJob
from tests.support import BASE_DIR, process_env

pytestmark = pytest.mark.django_db(transaction=True)


def _burst(user, processes: int, per_process: int) -> Counter:
    running = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.inference.burst", str(user.pk), str(per_process)],
            cwd=BASE_DIR,
            env=process_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    outcomes: Counter = Counter()
    for process in running:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        outcomes.update(json.loads(out.strip().splitlines()[-1]))
    return outcomes


def test_fifty_concurrent_submits_from_five_processes_with_room_for_ten_accept_exactly_ten(subscriber, pro_plan):
    per_job = len(prompt_token_ids("inkwell-tiny", prompt="The lighthouse keeper")) + 20
    pro_plan.monthly_token_allowance = per_job * 10
    pro_plan.save()

    outcomes = _burst(subscriber, processes=5, per_process=10)

    assert outcomes == {"accepted": 10, "insufficient_quota": 40}
    assert GenerationJob.objects.filter(user=subscriber).count() == 10
    period = QuotaPeriod.objects.get(workspace__personal_of=subscriber)
    assert period.reserved == per_job * 10 == period.allowance
    assert period.used == 0
    # The member's own line under the pool holds exactly what the pool does: no lost update.
    assert MemberQuota.objects.get(quota_period=period, user=subscriber).reserved == per_job * 10


def test_concurrent_submits_never_exceed_the_plans_concurrency_limit(subscriber, pro_plan):
    pro_plan.max_concurrent_jobs = 3
    pro_plan.save()

    outcomes = _burst(subscriber, processes=4, per_process=5)

    assert outcomes == {"accepted": 3, "concurrency_limit_exceeded": 17}
    assert GenerationJob.objects.filter(user=subscriber).count() == 3
