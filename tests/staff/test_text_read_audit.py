"""Staff reading a customer's prompt or output in the admin is an audit event: one per view of a
job's page, naming the staff member, the workspace and the job; the list of jobs shows no text."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.workspaces import SESSION_KEY, workspace_personal
from core.models import AuditAction, AuditEvent
from tests.factories import JobFactory, PlanFactory

pytestmark = pytest.mark.django_db

PROMPT = "Patient notes: prompt-marker-5f1c"
OUTPUT = "Summary: output-marker-8a2e"


@pytest.fixture
def default_plan(db, tiny_model_path):
    return PlanFactory(slug="free", name="Free", is_default=True, price_cents=0)


@pytest.fixture
def job(owner):
    return JobFactory(user=owner, prompt=PROMPT, output_text=OUTPUT, status="succeeded")


@pytest.fixture
def staff(client, staff_user):
    client.force_login(staff_user)
    return staff_user


def _reads():
    return AuditEvent.objects.filter(action=AuditAction.STAFF_READ_TEXTS)


def test_opening_a_jobs_page_shows_its_texts_and_records_who_read_them(client, staff, job, owner):
    page = client.get(f"/admin/inference/generationjob/{job.pk}/change/", REMOTE_ADDR="198.51.100.4")

    body = page.content.decode()
    assert page.status_code == 200
    assert PROMPT in body and OUTPUT in body
    event = _reads().get()
    assert (event.actor, event.user, event.workspace) == (staff, owner, workspace_personal(owner))
    assert event.detail == {"job": str(job.pk)}
    assert (event.email, event.ip) == (owner.email, "198.51.100.4")


def test_each_view_is_one_event(client, staff, job):
    for _ in range(3):
        client.get(f"/admin/inference/generationjob/{job.pk}/change/")

    assert _reads().count() == 3


def test_the_list_of_jobs_shows_no_text_and_records_nothing(client, staff, job):
    listing = client.get("/admin/inference/generationjob/")
    found = client.get(f"/admin/inference/generationjob/?q={job.pk}")

    assert listing.status_code == found.status_code == 200
    assert str(job.pk) in found.content.decode()
    for body in (listing.content.decode(), found.content.decode()):
        assert "prompt-marker" not in body and "output-marker" not in body
    assert not _reads().exists()


def test_a_missing_job_or_its_history_records_nothing(client, staff, job):
    client.get("/admin/inference/generationjob/00000000-0000-0000-0000-000000000000/change/")
    client.get(f"/admin/inference/generationjob/{job.pk}/history/")

    assert not _reads().exists()


def test_the_texts_are_shown_never_edited_in_the_admin(client, staff, job):
    client.post(f"/admin/inference/generationjob/{job.pk}/change/", {"prompt": "rewritten", "output_text": "x"})

    job.refresh_from_db()
    assert (job.prompt, job.output_text) == (PROMPT, OUTPUT)


def test_a_non_staff_user_gets_no_page_and_no_event(client, job, other_user):
    client.force_login(other_user)

    response = client.get(f"/admin/inference/generationjob/{job.pk}/change/")

    assert response.status_code in (302, 403, 404)
    assert not _reads().exists()


def test_the_read_is_listed_in_the_staff_audit_log_and_on_the_owners_activity_page(client, staff, job, owner):
    client.get(f"/admin/inference/generationjob/{job.pk}/change/")

    log = client.get(f"/admin/core/auditevent/?action__exact={AuditAction.STAFF_READ_TEXTS}").content.decode()
    owner_browser = Client()
    owner_browser.force_login(owner)
    session = owner_browser.session
    session[SESSION_KEY] = workspace_personal(owner).pk
    session.save()
    activity = owner_browser.get("/workspace/activity/").content.decode()

    assert "Staff read a customer&#x27;s texts" in log and staff.email in log
    assert workspace_personal(owner).name in log
    assert "Staff read a customer&#x27;s texts" in activity and str(job.pk) in activity


def test_staff_cannot_delete_a_job_row_which_would_skip_settling_its_reservation(client, staff, job):
    page = client.get(f"/admin/inference/generationjob/{job.pk}/delete/")
    listing = client.get("/admin/inference/generationjob/")

    assert page.status_code == 403
    assert listing.status_code == 200 and "delete_selected" not in listing.content.decode()
    assert type(job).objects.filter(pk=job.pk).exists()
