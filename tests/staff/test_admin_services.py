"""No admin action bypasses a service: the ledger and the job's status and counts are read-only,
and a job is stopped with the Cancel action, which goes through job_cancel."""

from __future__ import annotations

import pytest

from accounts.workspaces import membership_personal
from billing.models import QuotaPeriod
from inference.models import GenerationJob, JobStatus
from inference.services import job_submit
from tests.factories import PlanFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def default_plan(db, tiny_model_path):
    return PlanFactory(slug="free", name="Free", is_default=True, price_cents=0, monthly_token_allowance=10_000)


@pytest.fixture
def staff(client, staff_user):
    client.force_login(staff_user)
    return staff_user


@pytest.fixture
def queued_job(staff):
    return job_submit(
        member=membership_personal(UserFactory(email="customer@example.com")), prompt="Hello there", max_new_tokens=10
    )


def test_a_jobs_status_and_counts_cannot_be_edited_in_the_admin(client, queued_job):
    url = f"/admin/inference/generationjob/{queued_job.pk}/change/"
    form = client.get(url).content.decode()

    client.post(url, {"status": "succeeded", "tokens_charged": "0", "tokens_reserved": "0", "prompt": "x"})

    assert 'name="status"' not in form and 'name="tokens_reserved"' not in form
    job = GenerationJob.objects.get(pk=queued_job.pk)
    assert (job.status, job.tokens_reserved) == (JobStatus.QUEUED, queued_job.tokens_reserved)


def test_the_ledger_cannot_be_edited_in_the_admin(client, queued_job):
    period = QuotaPeriod.objects.get(workspace__personal_of=queued_job.user)
    url = f"/admin/billing/quotaperiod/{period.pk}/change/"
    form = client.get(url).content.decode()

    start, end = period.period_start, period.period_end
    client.post(
        url,
        {
            "workspace": str(period.workspace_id),
            "period_start_0": f"{start:%Y-%m-%d}",
            "period_start_1": f"{start:%H:%M:%S}",
            "period_end_0": f"{end:%Y-%m-%d}",
            "period_end_1": f"{end:%H:%M:%S}",
            "allowance": "999999999",
            "reserved": "0",
            "used": "0",
        },
    )

    assert 'name="allowance"' not in form and 'name="reserved"' not in form
    period.refresh_from_db()
    assert (period.allowance, period.reserved) == (10_000, queued_job.tokens_reserved)


def test_the_cancel_action_cancels_through_the_service_and_releases_the_reservation(client, queued_job):
    response = client.post(
        "/admin/inference/generationjob/",
        {"action": "cancel", "_selected_action": [str(queued_job.pk)]},
        follow=True,
    )

    assert "Cancel requested for 1 job(s)" in response.content.decode()
    job = GenerationJob.objects.get(pk=queued_job.pk)
    assert job.status == JobStatus.CANCELLED
    period = QuotaPeriod.objects.get(workspace__personal_of=queued_job.user)
    assert (period.reserved, period.used) == (0, 0)
