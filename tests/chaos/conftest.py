from __future__ import annotations

import pytest

from tests.chaos.harness import ARTIFACTS, Deadline, Stack, StackConfig, missing_services


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    """Replaces the suite's fixture of this name: these tests never touch the shared Redis
    (their rate-limit counters live in the stack's private Redis)."""
    yield


@pytest.fixture(scope="module")
def stack():
    """A private Inkwell: its own PostgreSQL cluster and Redis on free loopback ports, a uvicorn
    web process, two Celery workers and the maintenance process (the sweeper every 5 s, a
    worker stale after 4 s). Logs in test-artifacts/chaos/tests/run-*/."""
    why = missing_services()
    if why:
        pytest.skip(why)
    stack = Stack(StackConfig(workers=2, concurrency=4, users_per_plan=2, log_dir=ARTIFACTS / "tests"))
    try:
        stack.start(Deadline(240))
        yield stack
    finally:
        stack.stop()
