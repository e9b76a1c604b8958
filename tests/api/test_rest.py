from __future__ import annotations

import threading

import pytest
from django.db import close_old_connections
from rest_framework.test import APIClient

from accounts.models import Membership, Workspace, WorkspaceRole
from accounts.workspaces import membership_personal, workspace_personal
from billing.models import QuotaPeriod
from inference.models import GenerationJob
from inference.outcome import JobOutcome
from inference.services import job_claim, job_finish, job_submit
from tests.factories import ApiKeyFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db

BODY = {"prompt": "Once upon a time", "max_new_tokens": 20, "temperature": 0}


def test_create_list_retrieve_and_cancel_a_job(api, owner):
    created = api.post("/api/v1/jobs", BODY, format="json")

    assert created.status_code == 201
    job = created.json()
    assert (job["status"], job["model"], job["max_new_tokens"]) == ("queued", "inkwell-tiny", 20)
    assert job["stream_url"] == f"/api/v1/jobs/{job['id']}/stream"
    listing = api.get("/api/v1/jobs", {"status": "queued"}).json()
    assert listing["count"] == 1 and listing["results"][0]["id"] == job["id"]
    assert api.get(f"/api/v1/jobs/{job['id']}").json()["id"] == job["id"]
    cancelled = api.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert cancelled.json()["status"] == "cancelled"
    assert QuotaPeriod.objects.get(workspace__personal_of=owner).reserved == 0


def test_every_response_carries_rate_limit_and_quota_headers(api):
    response = api.post("/api/v1/jobs", BODY, format="json")

    assert response["x-ratelimit-limit-requests"] == "100"
    assert int(response["x-ratelimit-remaining-requests"]) == 99
    assert response["x-ratelimit-reset-requests"].endswith("s")
    assert int(response["x-quota-limit-tokens"]) == 100_000
    assert int(response["x-quota-remaining-tokens"]) == 100_000 - response.json()["prompt_tokens"] - 20
    assert "x-quota-reset" in response


def test_the_same_idempotency_key_returns_the_same_job_and_a_different_body_is_422(api):
    first = api.post("/api/v1/jobs", BODY, format="json", headers={"Idempotency-Key": "abc-1"})
    again = api.post("/api/v1/jobs", BODY, format="json", headers={"Idempotency-Key": "abc-1"})
    changed = api.post("/api/v1/jobs", {**BODY, "prompt": "Other"}, format="json", headers={"Idempotency-Key": "abc-1"})

    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert changed.status_code == 422
    assert changed.json()["error"]["code"] == "idempotency_key_reused"
    assert GenerationJob.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_requests_with_one_idempotency_key_at_once_make_one_job(api_key, owner):
    start = threading.Barrier(2)
    statuses = []

    def send():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key}")
        start.wait()
        try:
            statuses.append(
                client.post("/api/v1/jobs", BODY, format="json", headers={"Idempotency-Key": "k"}).status_code
            )
        finally:
            close_old_connections()

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200, 201]
    assert GenerationJob.objects.filter(user=owner).count() == 1
    period = QuotaPeriod.objects.get(workspace__personal_of=owner)
    assert period.reserved == GenerationJob.objects.get().tokens_reserved


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        ({"prompt": "Hi", "colour": "blue"}, 400, "colour", "invalid_request"),
        ({"prompt": "Hi", "temperature": 9}, 400, "temperature", "invalid_request"),
        ({"prompt": ""}, 400, "prompt", "invalid_request"),
        ({"prompt": "Hi", "model": "gpt-x"}, 404, "model", "model_not_found"),
        (
            {"messages": [{"role": "user", "content": "x"}, {"role": "wizard", "content": "x"}]},
            400,
            "messages.1.role",
            "invalid_request",
        ),
    ],
)
def test_errors_come_in_one_envelope(api, body, status, param, code):
    response = api.post("/api/v1/jobs", body, format="json")

    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert (error["param"], error["code"]) == (param, code)
    assert not GenerationJob.objects.exists()


def test_no_quota_left_is_402_and_distinct_from_a_rate_limit(api, owner, api_plan):
    api.post("/api/v1/jobs", BODY, format="json")
    QuotaPeriod.objects.filter(workspace__personal_of=owner).update(used=100_000)
    no_quota = api.post("/api/v1/jobs", BODY, format="json")
    QuotaPeriod.objects.filter(workspace__personal_of=owner).update(used=0)
    api_plan.requests_per_minute = 2
    api_plan.save()
    api.post("/api/v1/jobs", BODY, format="json")
    limited = api.post("/api/v1/jobs", BODY, format="json")

    assert (no_quota.status_code, no_quota.json()["error"]["type"]) == (402, "insufficient_quota")
    assert (limited.status_code, limited.json()["error"]["code"]) == (429, "rate_limit_exceeded")


def test_another_users_job_is_404_through_the_api(api, owner, other_user):
    other = job_submit(member=membership_personal(other_user), prompt="Hi", max_new_tokens=5)

    assert api.get(f"/api/v1/jobs/{other.pk}").status_code == 404
    cancel = api.post(f"/api/v1/jobs/{other.pk}/cancel")
    assert cancel.status_code == 404
    assert api.get(f"/api/v1/jobs/{other.pk}").json()["error"]["type"] == "not_found_error"
    assert cancel.json()["error"] == {
        "message": "Not found.",
        "type": "not_found_error",
        "param": None,
        "code": "not_found",
    }
    other.refresh_from_db()
    assert other.status == "queued"
    assert QuotaPeriod.objects.get(workspace__personal_of=other_user).reserved == other.tokens_reserved > 0


def test_usage_reports_the_period_and_days(api, owner):
    api.post("/api/v1/jobs", BODY, format="json")

    usage = api.get("/api/v1/usage").json()

    assert usage["allowance"] == 100_000 and usage["reserved"] > 0 and usage["used"] == 0
    assert usage["days"] and {"date", "tokens"} <= set(usage["days"][0])
    # The key acts in the owner's personal workspace: its pool, one seat, the owner as its only member.
    assert (usage["workspace"], usage["seats"]) == (workspace_personal(owner).slug, 1)
    assert usage["member"] == {
        "email": owner.email, "role": "owner", "tokens": 0, "jobs": 0, "monthly_token_cap": None,
    }  # fmt: skip
    assert usage["members"] == [usage["member"]]


def _finished(member) -> GenerationJob:
    job = job_submit(member=member, prompt="The lighthouse keeper", max_new_tokens=10)
    job_finish(
        job=job_claim(job_id=job.pk, worker="test"),
        outcome=JobOutcome(text="wrote a letter", completion_tokens=4, finish_reason="length"),
    )
    return GenerationJob.objects.get(pk=job.pk)


def _key_client(user, workspace) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiKeyFactory(user=user, workspace=workspace).raw}")
    return client


def test_a_member_sees_the_pool_and_their_own_usage_but_not_the_other_members(owner, other_user, default_plan):
    team = Workspace.objects.create(name="Team", slug="team")
    SubscriptionFactory(workspace=team, plan=default_plan)  # a team's pool comes with a subscription
    boss = Membership.objects.create(workspace=team, user=owner, role=WorkspaceRole.OWNER)
    member = Membership.objects.create(workspace=team, user=other_user, role=WorkspaceRole.MEMBER)
    owner_job, member_job = _finished(boss), _finished(member)
    _finished(membership_personal(other_user))  # the member's personal workspace is not the team's

    mine = _key_client(other_user, team).get("/api/v1/usage").json()
    everyone = _key_client(owner, team).get("/api/v1/usage").json()

    assert mine["workspace"] == everyone["workspace"] == "team"
    assert mine["used"] == everyone["used"] == owner_job.tokens_charged + member_job.tokens_charged
    assert sum(day["tokens"] for day in mine["days"]) == member_job.tokens_charged
    assert (mine["member"]["email"], mine["member"]["role"], mine["member"]["tokens"]) == (
        other_user.email, "member", member_job.tokens_charged,
    )  # fmt: skip
    assert "members" not in mine
    assert sorted((line["email"], line["tokens"]) for line in everyone["members"]) == sorted(
        [(owner.email, owner_job.tokens_charged), (other_user.email, member_job.tokens_charged)]
    )


def test_an_unauthenticated_request_gets_the_envelope(db):
    response = APIClient().get("/api/v1/jobs")

    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_the_schema_and_the_docs_are_served_without_a_cdn(client):
    schema = client.get("/api/schema/")
    docs = client.get("/api/docs/").content.decode()

    assert schema.status_code == 200 and b"/api/v1/jobs" in schema.content
    assert "drf_spectacular_sidecar" in docs and "cdn" not in docs.lower()


@pytest.mark.parametrize(
    "body",
    [{"prompt": "a\x00b"}, {"messages": [{"role": "user", "content": "a\x00"}]}, {"prompt": "Hi", "stop": ["\x00"]}],
)
def test_a_nul_character_is_a_clear_400_not_a_server_error(api, body):
    response = api.post("/api/v1/jobs", body, format="json")

    assert response.status_code == 400
    assert "NUL" in response.json()["error"]["message"] or "null" in response.json()["error"]["message"].lower()
    assert not GenerationJob.objects.exists()


def test_list_filters_are_validated(api):
    nul = api.get("/api/v1/jobs", {"q": "a\x00b"})
    assert nul.status_code == 400
    assert nul.json()["error"]["param"] == "q"
    assert api.get("/api/v1/jobs", {"status": "sleeping"}).json()["error"]["param"] == "status"


def test_a_signed_in_user_without_api_access_cannot_use_the_api_by_session(client, api_plan, owner):
    api_plan.api_access = False
    api_plan.save()
    client.force_login(owner)

    listing = client.get("/api/v1/jobs")
    submit = client.post("/api/v1/jobs", {"prompt": "Hi", "max_new_tokens": 5}, content_type="application/json")

    assert (listing.status_code, submit.status_code) == (403, 403)
    assert "does not include API access" in listing.json()["error"]["message"]
    assert "does not include API access" in submit.json()["error"]["message"]
    assert not GenerationJob.objects.exists()
