"""The job page shows how long a job waited and ran in seconds when it was quick (never "0 minutes")."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.workspaces import membership_personal
from inference.models import GenerationJob, JobStatus
from inference.services import job_submit
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _job_page(client, owner, *, status, waited=None, ran=None) -> str:
    job = job_submit(member=membership_personal(owner), prompt="The lighthouse keeper", max_new_tokens=10)
    created = timezone.now() - timedelta(hours=3)
    started = created + waited if waited is not None else None
    finished = started + ran if ran is not None else None
    GenerationJob.objects.filter(pk=job.pk).update(
        status=status, created_at=created, started_at=started, finished_at=finished
    )
    client.force_login(owner)
    return client.get(f"/jobs/{job.pk}/").content.decode()


def _details(page: str) -> str:
    return re.search(r'data-testid="job-durations">(.*?)</dd>', page).group(1)


def _numbers(page: str) -> str:
    return re.search(r'data-testid="job-numbers">(.*?)</p>', page, re.S).group(1)


def test_a_quick_job_shows_its_wait_and_run_in_seconds(client, owner):
    page = _job_page(
        client, owner, status=JobStatus.SUCCEEDED, waited=timedelta(milliseconds=300), ran=timedelta(seconds=1.25)
    )

    assert _details(page) == "0.3 s / 1.3 s"
    assert _numbers(page).endswith(" · 1.3 s")
    assert "minutes" not in _details(page)


def test_a_long_job_shows_minutes_and_hours(client, owner):
    page = _job_page(
        client, owner, status=JobStatus.SUCCEEDED, waited=timedelta(minutes=3, seconds=5), ran=timedelta(minutes=62)
    )

    assert _details(page) == "3 min 5 s / 1 h 2 min"
    assert _numbers(page).endswith(" · 1 h 2 min")


def test_a_running_job_has_a_wait_and_no_run_yet(client, owner):
    page = _job_page(client, owner, status=JobStatus.RUNNING, waited=timedelta(seconds=42))

    assert _details(page) == "42 s / —"


def test_a_queued_job_has_neither(client, owner):
    page = _job_page(client, owner, status=JobStatus.QUEUED)

    assert _details(page) == "—"


def test_the_staff_dashboard_shows_the_wait_p95_by_the_same_rule(client, owner):
    staff = UserFactory(email="staff@example.com", is_staff=True, is_superuser=True)
    client.force_login(staff)
    before = client.get("/staff/business/").content.decode()
    job = job_submit(member=membership_personal(owner), prompt="The lighthouse keeper", max_new_tokens=10)
    created = timezone.now() - timedelta(minutes=5)
    GenerationJob.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING, created_at=created, started_at=created + timedelta(seconds=185)
    )

    after = client.get("/staff/business/").content.decode()

    assert "<dt>Wait p95 (last hour)</dt><dd>—</dd>" in before
    assert "<dt>Wait p95 (last hour)</dt><dd>3 min 5 s</dd>" in after
