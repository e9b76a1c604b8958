"""The API under load from several processes, and against its own schema."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter

import pytest

from inference.models import GenerationJob
from tests.support import BASE_DIR

pytestmark = pytest.mark.django_db(transaction=True)


def test_two_processes_hammering_one_key_never_exceed_the_plans_requests_per_minute(
    web_server, api_key, api_plan, owner
):
    api_plan.requests_per_minute = 10
    api_plan.save()
    if time.time() % 60 > 40:  # keep the burst inside one one-minute window
        time.sleep(61 - time.time() % 60)

    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.api.hammer", web_server.url, api_key, "15"],
            cwd=BASE_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    statuses: Counter = Counter()
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        statuses.update(json.loads(out))

    assert statuses == {201: 10, 429: 20}
    assert GenerationJob.objects.filter(user=owner).count() == 10


def test_schemathesis_finds_no_server_error_and_no_response_off_the_schema(web_server, api_key, artifacts_dir):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{web_server.url}/api/schema/",
            "--url",
            web_server.url,
            "-H",
            f"Authorization: Bearer {api_key}",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--request-timeout",
            "30",
        ],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )

    (artifacts_dir / "schemathesis.txt").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout[-4000:]
