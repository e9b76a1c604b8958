"""A worker whose engine thread dies stops reporting healthy and exits (code 3) for its supervisor,
and the job it held ends at once instead of waiting forever. Real worker process; the fault is put
into the engine's scheduler loop through a sitecustomize module on the worker's path."""

from __future__ import annotations

import pytest

from accounts.workspaces import membership_personal
from billing.models import QuotaPeriod
from inference.models import FinishReason, JobStatus, Worker
from inference.services import job_submit
from inference.worker import ENGINE_FAILED_EXIT_CODE
from tests.inference.helpers import wait_until_final
from tests.support import BASE_DIR, start_worker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

FAULT = """
import sys

sys.path.insert(0, {root!r})  # site runs before the working directory joins the path

from inference.engine import Engine


def _broken(self):
    raise RuntimeError("scheduler bug (injected by the test)")


Engine._take_waiting = _broken
"""


def test_a_worker_whose_engine_dies_ends_its_job_drops_its_heartbeat_and_exits_for_its_supervisor(
    subscriber, artifacts_dir, tmp_path
):
    (tmp_path / "sitecustomize.py").write_text(FAULT.format(root=str(BASE_DIR)))
    worker = start_worker(artifacts_dir / "logs", name="fragile", PYTHONPATH=str(tmp_path))
    try:
        wait_until(lambda: Worker.objects.filter(name__startswith="fragile@").exists(), timeout=60,
                   what="worker heartbeat", process=worker.process)  # fmt: skip
        job = job_submit(
            member=membership_personal(subscriber), prompt="Once upon a time", max_new_tokens=20, temperature=0
        )

        job = wait_until_final(job, timeout=60)

        assert (job.status, job.finish_reason) == (JobStatus.FAILED, FinishReason.ERROR)
        assert job.tokens_charged == 0  # nothing was delivered
        assert QuotaPeriod.objects.get(workspace__personal_of=subscriber).reserved == 0
        assert worker.process.wait(timeout=60) == ENGINE_FAILED_EXIT_CODE
        assert not Worker.objects.filter(name__startswith="fragile@").exists()
    finally:
        worker.stop()
    assert "engine failed" in worker.log()
