"""Tenant isolation: Acme (an owner, an admin, a member, a colleague), Globex (its own owner) and an
outsider. Every page, download, stream, CSV, key, member, invitation, billing and API URL answers
404 to whoever is not in the workspace, refuses what a role may not do, and changes nothing."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import pytest
from django.core import mail
from django.test import Client
from rest_framework.test import APIClient

from accounts import teams
from accounts.models import ApiKey, Invitation, WorkspaceRole
from accounts.workspaces import SESSION_KEY, workspace_personal
from billing import sandbox
from billing.models import QuotaPeriod
from inference.models import GenerationJob, JobStatus
from tests.factories import ApiKeyFactory
from tests.workspaces.conftest import SEATS
from tests.workspaces.helpers import finished_job, membership, queued_job, state, work_in

pytestmark = pytest.mark.django_db


@dataclass
class Acme:
    """Everything in the two workspaces that a request could reach, by name."""

    team: object
    rival: object
    jobs: dict[str, GenerationJob]
    keys: dict[str, ApiKey]
    invitation: Invitation
    ids: dict[str, object]
    secrets: list[str]

    @property
    def everywhere(self) -> tuple:
        """Both teams and the personal workspaces of the member and the outsider, who hold keys."""
        return (
            self.team,
            self.rival,
            self.jobs["member_personal"].workspace,
            self.keys["outsider"].workspace,
        )


@pytest.fixture
def acme(team, rival, owner, admin, member, colleague, other_user, outsider, team_plan) -> Acme:
    jobs = {
        "owner_done": finished_job(owner, team, prompt="Acme owner plans", text="owner secret answer"),
        "admin_done": finished_job(admin, team, prompt="Acme admin memo", text="admin secret answer"),
        "member_done": finished_job(member, team, prompt="Acme member draft", text="member secret answer"),
        "colleague_done": finished_job(colleague, team, prompt="Acme colleague notes", text="colleague secret answer"),
        "owner_queued": queued_job(owner, team, prompt="Acme owner waiting"),
        "member_queued": queued_job(member, team, prompt="Acme member waiting"),
        "rival_done": finished_job(other_user, rival, prompt="Globex roadmap", text="rival secret answer"),
        "member_personal": finished_job(
            member, workspace_personal(member), prompt="Member personal diary", text="personal secret answer"
        ),
    }
    keys = {
        "owner": ApiKeyFactory(user=owner, workspace=team, name="acme-owner-key"),
        "admin": ApiKeyFactory(user=admin, workspace=team, name="acme-admin-key"),
        "member": ApiKeyFactory(user=member, workspace=team, name="acme-member-key"),
        "colleague": ApiKeyFactory(user=colleague, workspace=team, name="acme-colleague-key"),
        "rival": ApiKeyFactory(user=other_user, workspace=rival, name="globex-owner-key"),
        "outsider": ApiKeyFactory(user=outsider, name="outsider-key"),
        "member_personal": ApiKeyFactory(user=member, name="member-personal-key"),
    }
    teams.member_cap_set(membership=membership(member, team), cap=5_000)
    invitation = teams.invitation_create(
        workspace=team, email="invitee@example.com", role=WorkspaceRole.MEMBER, seats=SEATS, invited_by=owner
    )
    ids = {
        **{name: job.pk for name, job in jobs.items()},
        **{f"{name}_key": key.pk for name, key in keys.items()},
        "owner_m": membership(owner, team).pk,
        "admin_m": membership(admin, team).pk,
        "member_m": membership(member, team).pk,
        "colleague_m": membership(colleague, team).pk,
        "invitation": invitation.pk,
        "team": team.pk,
        "checkout_token": sandbox.checkout_url(
            workspace=team, plan=team_plan, customer_id="cus_acme", success_url="/billing/", cancel_url="/pricing/"
        ),
        "portal_token": sandbox.portal_url(workspace=team, return_url="/billing/"),
    }
    secrets = [
        *(job.prompt for name, job in jobs.items() if name not in ("rival_done", "member_personal")),
        *(job.output_text for name, job in jobs.items() if name.endswith("_done") and name != "rival_done"),
        "acme-owner-key", "acme-admin-key", "acme-member-key", "acme-colleague-key",
        "admin@example.com", "member@example.com", "colleague@example.com", "invitee@example.com", "Acme",
    ]  # fmt: skip
    mail.outbox.clear()
    return Acme(team=team, rival=rival, jobs=jobs, keys=keys, invitation=invitation, ids=ids, secrets=secrets)


def _send(client, method: str, path: str, data: dict | None, ids: dict):
    path = path.format(**ids)
    if method == "get":
        return client.get(path)
    return client.post(path, {name: str(value).format(**ids) for name, value in (data or {}).items()})


def _api(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def _shows_none_of(response, secrets: list[str]) -> None:
    body = b"".join(response.streaming_content) if response.streaming else response.content
    text = body.decode()
    leaked = [secret for secret in secrets if secret in text]
    assert leaked == [], f"{response.request['PATH_INFO']} shows {leaked}"


# --- people from elsewhere: the outsider, Globex's owner, an outsider with a forged session -----------


@dataclass
class Intruder:
    browser: Client
    api: APIClient
    name: str


@pytest.fixture(params=["outsider", "rival_owner", "outsider_with_forged_session"])
def intruder(request, acme, outsider, other_user) -> Intruder:
    if request.param == "rival_owner":
        return Intruder(work_in(other_user, acme.rival), _api(acme.keys["rival"].raw), request.param)
    browser = work_in(outsider, workspace_personal(outsider))
    if request.param == "outsider_with_forged_session":
        # The session names Acme, as if the outsider had edited it: membership decides, not the session.
        session = browser.session
        session[SESSION_KEY] = acme.team.pk
        session.save()
    return Intruder(browser, _api(acme.keys["outsider"].raw), request.param)


OBJECT_URLS = [
    pytest.param("get", "/jobs/{%s}/", None, id="job-page"),
    pytest.param("get", "/jobs/{%s}/status/", None, id="job-status"),
    pytest.param("get", "/jobs/{%s}/download.txt", None, id="download-txt"),
    pytest.param("get", "/jobs/{%s}/download.md", None, id="download-md"),
    pytest.param("get", "/generate/?from={%s}", None, id="generate-from"),
    pytest.param("get", "/generate/?continue={%s}", None, id="generate-continue"),
    pytest.param("post", "/jobs/{%s}/cancel/", None, id="job-cancel"),
    pytest.param("post", "/jobs/{%s}/delete/", None, id="job-delete"),
]
ACME_JOBS = ["owner_done", "member_queued"]


@pytest.mark.parametrize("job", ACME_JOBS)
@pytest.mark.parametrize(("method", "path", "data"), OBJECT_URLS)
def test_another_workspaces_job_is_a_404_to_an_intruder_and_nothing_changes(
    intruder, acme, method, path, data, job, deliveries
):
    before = state(*acme.everywhere)

    response = _send(intruder.browser, method, path % job, data, acme.ids)

    assert response.status_code == 404
    _shows_none_of(response, acme.secrets)
    assert state(*acme.everywhere) == before
    assert GenerationJob.objects.get(pk=acme.jobs["member_queued"].pk).status == JobStatus.QUEUED


WORKSPACE_OBJECT_URLS = [
    pytest.param("post", "/account/api/{owner_key}/revoke/", None, id="revoke-owner-key"),
    pytest.param("post", "/account/api/{member_key}/revoke/", None, id="revoke-member-key"),
    pytest.param("post", "/workspace/members/{member_m}/remove/", None, id="remove-member"),
    pytest.param("post", "/workspace/members/{admin_m}/remove/", None, id="remove-admin"),
    pytest.param("post", "/workspace/members/{member_m}/role/", {"role": "admin"}, id="make-admin"),
    pytest.param("post", "/workspace/members/{member_m}/cap/", {"monthly_token_cap": ""}, id="lift-cap"),
    pytest.param("post", "/workspace/members/{colleague_m}/cap/", {"monthly_token_cap": "0"}, id="set-cap"),
    pytest.param("post", "/workspace/members/{admin_m}/owner/", None, id="transfer-ownership"),
    pytest.param("post", "/workspace/members/{owner_m}/owner/", None, id="transfer-to-owner"),
    pytest.param("post", "/workspace/invitations/{invitation}/revoke/", None, id="revoke-invitation"),
    pytest.param("post", "/workspaces/switch/", {"workspace": "{team}"}, id="switch-into"),
    pytest.param("get", "{checkout_token}", None, id="sandbox-checkout"),
    pytest.param("post", "{checkout_token}", {"action": "pay"}, id="sandbox-checkout-pay"),
    pytest.param("get", "{portal_token}", None, id="sandbox-portal"),
    pytest.param("post", "{portal_token}", {"action": "cancel_now"}, id="sandbox-portal-cancel"),
]


@pytest.mark.parametrize(("method", "path", "data"), WORKSPACE_OBJECT_URLS)
def test_another_workspaces_keys_members_invitations_and_billing_are_a_404_and_nothing_changes(
    intruder, acme, method, path, data, deliveries
):
    before = state(*acme.everywhere)

    response = _send(intruder.browser, method, path, data, acme.ids)

    assert response.status_code == 404
    _shows_none_of(response, acme.secrets)
    assert state(*acme.everywhere) == before
    assert deliveries == []
    assert mail.outbox == []
    assert intruder.browser.session.get(SESSION_KEY) != acme.team.pk


@pytest.mark.parametrize(
    "path", ["/jobs/", "/jobs/?q=secret", "/usage/", "/usage/export.csv", "/account/api/", "/workspace/members/",
             "/generate/", "/billing/"],
)  # fmt: skip
def test_an_intruders_own_pages_show_nothing_of_another_workspace(intruder, acme, path):
    before = state(*acme.everywhere)

    response = intruder.browser.get(path)

    assert response.status_code == 200
    _shows_none_of(response, acme.secrets)
    assert state(*acme.everywhere) == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/jobs/{%s}"),
        ("post", "/api/v1/jobs/{%s}/cancel"),
    ],
)
@pytest.mark.parametrize("job", ACME_JOBS)
def test_an_intruders_key_gets_404_for_another_workspaces_jobs(intruder, acme, method, path, job):
    before = state(*acme.everywhere)

    response = getattr(intruder.api, method)((path % job).format(**acme.ids))

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    _shows_none_of(response, acme.secrets)
    assert state(*acme.everywhere) == before


# The event streams and the /v1 views are async and give their database connection back early,
# which only works outside the test's transaction: these tests commit their rows.
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("job", ACME_JOBS)
@pytest.mark.parametrize("path", ["/jobs/{%s}/stream", "/api/v1/jobs/{%s}/stream"])
def test_another_workspaces_job_stream_is_a_404_to_an_intruder(intruder, acme, path, job):
    before = state(*acme.everywhere)
    client = intruder.api if path.startswith("/api/") else intruder.browser

    response = client.get((path % job).format(**acme.ids))

    assert response.status_code == 404
    _shows_none_of(response, acme.secrets)
    assert state(*acme.everywhere) == before


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/jobs",
        "/api/v1/jobs?q=secret",
        "/api/v1/usage",
        pytest.param("/v1/models", marks=pytest.mark.django_db(transaction=True)),
    ],
)
def test_an_intruders_key_lists_nothing_of_another_workspace(intruder, acme, path):
    response = intruder.api.get(path)

    assert response.status_code == 200
    _shows_none_of(response, acme.secrets)
    assert int(response["x-quota-limit-tokens"]) != QuotaPeriod.objects.get(workspace=acme.team).allowance


def test_switching_to_a_workspace_one_is_not_in_is_a_404_and_keeps_the_current_one(acme, member):
    browser = work_in(member, acme.team)

    for value in (acme.rival.pk, "not-a-number", "", 10**12):
        response = browser.post("/workspaces/switch/", {"workspace": value})
        assert response.status_code == 404, value
        assert browser.session[SESSION_KEY] == acme.team.pk
    # Still working in Acme: its job is there, Globex's is not.
    assert browser.get(f"/jobs/{acme.jobs['member_done'].pk}/").status_code == 200
    assert browser.get(f"/jobs/{acme.jobs['rival_done'].pk}/").status_code == 404


# --- roles inside Acme ---------------------------------------------------------------------------------

MEMBER_REFUSED = [
    pytest.param("get", "/workspace/members/", None, id="members-page"),
    pytest.param(
        "post", "/workspace/members/invite/", {"email": "newcomer@example.com", "role": "member"}, id="invite"
    ),
    pytest.param("post", "/workspace/members/{colleague_m}/remove/", None, id="remove-colleague"),
    pytest.param("post", "/workspace/members/{colleague_m}/role/", {"role": "admin"}, id="promote-colleague"),
    pytest.param("post", "/workspace/members/{member_m}/role/", {"role": "admin"}, id="promote-self"),
    pytest.param("post", "/workspace/members/{member_m}/cap/", {"monthly_token_cap": ""}, id="lift-own-cap"),
    pytest.param("post", "/workspace/members/{colleague_m}/cap/", {"monthly_token_cap": "0"}, id="cap-colleague"),
    pytest.param("post", "/workspace/members/{member_m}/owner/", None, id="take-ownership"),
    pytest.param("post", "/workspace/invitations/{invitation}/revoke/", None, id="revoke-invitation"),
    pytest.param("get", "/billing/", None, id="billing-home"),
    pytest.param("get", "/billing/success/", None, id="billing-success"),
    pytest.param("post", "/billing/portal/", None, id="billing-portal"),
    pytest.param("post", "/billing/seats/", {"seats": "10"}, id="billing-seats"),
    pytest.param("post", "/billing/subscribe/team/", {"seats": "3"}, id="billing-subscribe"),
]


@pytest.mark.parametrize(("method", "path", "data"), MEMBER_REFUSED)
def test_a_member_is_refused_what_only_admins_or_the_owner_may_do_and_nothing_changes(
    acme, member, method, path, data, deliveries
):
    browser = work_in(member, acme.team)
    before = state(*acme.everywhere)

    response = _send(browser, method, path, data, acme.ids)

    assert response.status_code == 403
    message = response.content.decode()
    assert "Only the workspace&#x27;s owner" in message and "your role is member" in message
    assert state(*acme.everywhere) == before
    assert mail.outbox == [] and deliveries == []


ADMIN_REFUSED = [
    pytest.param("get", "/billing/", None, "can manage billing", id="billing-home"),
    pytest.param("get", "/billing/success/", None, "can manage billing", id="billing-success"),
    pytest.param("post", "/billing/portal/", None, "can manage billing", id="billing-portal"),
    pytest.param("post", "/billing/seats/", {"seats": "10"}, "can manage billing", id="billing-seats"),
    pytest.param("post", "/billing/subscribe/team/", {"seats": "3"}, "can manage billing", id="billing-subscribe"),
    pytest.param(
        "post", "/workspace/members/{colleague_m}/role/", {"role": "admin"}, "make or unmake admins", id="make-admin"
    ),
    pytest.param("post", "/workspace/members/{admin_m}/owner/", None, "transfer ownership", id="take-ownership"),
    pytest.param("post", "/workspace/members/{colleague_m}/owner/", None, "transfer ownership", id="give-ownership"),
]


@pytest.mark.parametrize(("method", "path", "data", "says"), ADMIN_REFUSED)
def test_an_admin_is_refused_billing_ownership_and_making_admins_and_nothing_changes(
    acme, admin, method, path, data, says, deliveries
):
    browser = work_in(admin, acme.team)
    before = state(*acme.everywhere)

    response = _send(browser, method, path, data, acme.ids)

    assert response.status_code == 403
    assert says in response.content.decode()
    assert state(*acme.everywhere) == before
    assert mail.outbox == [] and deliveries == []


@pytest.mark.parametrize(
    ("path", "data", "says"),
    [
        ("/workspace/members/{colleague_m}/remove/", None, "remove an admin"),
        ("/workspace/members/{colleague_m}/role/", {"role": "member"}, "make or unmake admins"),
    ],
)
def test_an_admin_can_neither_remove_nor_demote_another_admin(acme, admin, colleague, path, data, says):
    teams.member_role_set(membership=membership(colleague, acme.team), role=WorkspaceRole.ADMIN)
    browser = work_in(admin, acme.team)
    before = state(*acme.everywhere)

    response = _send(browser, "post", path, data, acme.ids)

    assert response.status_code == 403
    assert says in response.content.decode()
    assert state(*acme.everywhere) == before
    assert membership(colleague, acme.team).role == WorkspaceRole.ADMIN


def test_nobody_can_remove_the_owner(acme, admin, owner):
    browser = work_in(admin, acme.team)
    before = state(*acme.everywhere)

    response = browser.post(f"/workspace/members/{acme.ids['owner_m']}/remove/", follow=True)

    assert "The owner cannot be removed" in response.content.decode()
    assert state(*acme.everywhere) == before


def test_the_owner_makes_and_unmakes_admins_and_an_admin_manages_members(acme, owner, admin, member, colleague):
    """The other side of the refusals above: the same URLs work for the roles that may use them."""
    as_owner, as_admin = work_in(owner, acme.team), work_in(admin, acme.team)

    as_owner.post(f"/workspace/members/{acme.ids['colleague_m']}/role/", {"role": "admin"})
    assert membership(colleague, acme.team).role == WorkspaceRole.ADMIN
    as_owner.post(f"/workspace/members/{acme.ids['colleague_m']}/role/", {"role": "member"})
    assert membership(colleague, acme.team).role == WorkspaceRole.MEMBER

    page = as_admin.get("/workspace/members/").content.decode()
    assert all(email in page for email in ("owner@", "admin@", "member@", "colleague@", "invitee@"))
    as_admin.post(f"/workspace/members/{acme.ids['member_m']}/cap/", {"monthly_token_cap": "12,000"})
    assert membership(member, acme.team).monthly_token_cap == 12_000
    as_admin.post(f"/workspace/invitations/{acme.ids['invitation']}/revoke/")
    assert Invitation.objects.get(pk=acme.invitation.pk).revoked_at is not None


# --- API keys ------------------------------------------------------------------------------------------


def test_a_member_sees_and_revokes_only_their_own_keys(acme, member):
    browser = work_in(member, acme.team)
    before = state(*acme.everywhere)

    page = browser.get("/account/api/").content.decode()

    assert "acme-member-key" in page
    for other in ("acme-owner-key", "acme-admin-key", "acme-colleague-key", "globex-owner-key",
                  "member-personal-key", "outsider-key"):  # fmt: skip
        assert other not in page
    for name in ("owner", "admin", "colleague", "rival", "member_personal"):
        assert browser.post(f"/account/api/{acme.keys[name].pk}/revoke/").status_code == 404, name
    assert state(*acme.everywhere) == before

    browser.post(f"/account/api/{acme.keys['member'].pk}/revoke/")
    assert ApiKey.objects.get(pk=acme.keys["member"].pk).revoked_at is not None


def test_an_admin_sees_every_key_of_the_workspace_and_revokes_a_members(acme, admin):
    browser = work_in(admin, acme.team)

    page = browser.get("/account/api/").content.decode()

    for name in ("acme-owner-key", "acme-admin-key", "acme-member-key", "acme-colleague-key"):
        assert name in page
    for other in ("globex-owner-key", "member-personal-key", "outsider-key"):
        assert other not in page
    # Another workspace's key, and the member's key of their personal workspace, stay out of reach.
    before = state(*acme.everywhere)
    for name in ("rival", "member_personal", "outsider"):
        assert browser.post(f"/account/api/{acme.keys[name].pk}/revoke/").status_code == 404, name
    assert state(*acme.everywhere) == before

    browser.post(f"/account/api/{acme.keys['member'].pk}/revoke/")
    assert ApiKey.objects.get(pk=acme.keys["member"].pk).revoked_at is not None
    assert ApiKey.objects.get(pk=acme.keys["member_personal"].pk).revoked_at is None


@pytest.mark.parametrize("job", ["rival_done", "member_personal", "colleague_done", "owner_queued"])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/jobs/{%s}"),
        ("post", "/api/v1/jobs/{%s}/cancel"),
        pytest.param("get", "/api/v1/jobs/{%s}/stream", marks=pytest.mark.django_db(transaction=True)),
    ],
)
def test_a_key_made_in_a_workspace_reaches_only_its_makers_jobs_there(acme, job, method, path):
    """The member's Acme key: not Globex's jobs, not the member's own personal-workspace job, not a
    colleague's job in Acme."""
    api = _api(acme.keys["member"].raw)
    before = state(*acme.everywhere)

    response = getattr(api, method)((path % job).format(**acme.ids))

    assert response.status_code == 404
    assert state(*acme.everywhere) == before


def test_a_key_lists_its_makers_jobs_in_its_workspace_only(acme):
    listing = _api(acme.keys["member"].raw).get("/api/v1/jobs").json()

    assert {job["id"] for job in listing["results"]} == {
        str(acme.jobs["member_done"].pk),
        str(acme.jobs["member_queued"].pk),
    }


@pytest.mark.parametrize(
    "path", ["/api/v1/usage", "/api/v1/ping", pytest.param("/v1/models", marks=pytest.mark.django_db(transaction=True))]
)
def test_a_keys_quota_headers_are_its_workspaces_pool(acme, member, path):
    acme_pool = QuotaPeriod.objects.get(workspace=acme.team)
    personal_pool = QuotaPeriod.objects.get(workspace=workspace_personal(member))

    in_acme = _api(acme.keys["member"].raw).get(path)
    in_personal = _api(acme.keys["member_personal"].raw).get(path)

    assert in_acme.status_code == in_personal.status_code == 200
    assert int(in_acme["x-quota-limit-tokens"]) == acme_pool.allowance == 5 * 10_000
    assert int(in_acme["x-quota-remaining-tokens"]) == acme_pool.allowance - acme_pool.used - acme_pool.reserved
    assert int(in_personal["x-quota-limit-tokens"]) == personal_pool.allowance == 20_000
    assert int(in_personal["x-quota-remaining-tokens"]) == personal_pool.remaining


@pytest.mark.django_db(transaction=True)
def test_chat_completions_with_another_workspaces_key_spend_that_workspaces_pool(acme, other_user):
    """Globex's pool is spent, Acme's is full: Globex's key is refused for Globex's pool, and
    nothing of Acme moves."""
    rival_pool = QuotaPeriod.objects.get(workspace=acme.rival)
    QuotaPeriod.objects.filter(pk=rival_pool.pk).update(used=rival_pool.allowance - rival_pool.reserved)
    before = state(*acme.everywhere)
    jobs = GenerationJob.objects.count()

    response = _api(acme.keys["rival"].raw).post(
        "/v1/chat/completions",
        {"model": "inkwell-tiny", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5},
        format="json",
    )

    assert response.status_code == 402
    error = response.json()["error"]
    assert error["code"] == "insufficient_quota" and "workspace's pool" in error["message"]
    assert int(response["x-quota-limit-tokens"]) == rival_pool.allowance == 2 * 10_000
    assert int(response["x-quota-remaining-tokens"]) == 0
    assert state(*acme.everywhere) == before
    assert GenerationJob.objects.count() == jobs


# --- history and usage inside a workspace ------------------------------------------------------------------


@pytest.mark.parametrize("who", ["colleague", "owner", "admin"])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/jobs/{%s}/"),
        ("get", "/jobs/{%s}/status/"),
        pytest.param("get", "/jobs/{%s}/stream", marks=pytest.mark.django_db(transaction=True)),
        ("get", "/jobs/{%s}/download.txt"),
        ("get", "/generate/?from={%s}"),
        ("post", "/jobs/{%s}/cancel/"),
        ("post", "/jobs/{%s}/delete/"),
    ],
)
@pytest.mark.parametrize("job", ["member_done", "member_queued"])
def test_a_members_jobs_are_theirs_alone_within_the_workspace(request, acme, who, method, path, job):
    browser = work_in(request.getfixturevalue(who), acme.team)
    before = state(*acme.everywhere)

    response = _send(browser, method, path % job, None, acme.ids)

    assert response.status_code == 404
    _shows_none_of(response, ["Acme member draft", "member secret answer", "Acme member waiting"])
    assert state(*acme.everywhere) == before


def test_history_lists_only_ones_own_jobs_in_the_current_workspace(acme, colleague, member):
    colleague_page = work_in(colleague, acme.team).get("/jobs/").content.decode()
    member_page = work_in(member, acme.team).get("/jobs/").content.decode()

    assert "Acme colleague notes" in colleague_page
    assert "Acme member draft" not in colleague_page and "Acme member waiting" not in colleague_page
    assert "Acme member draft" in member_page and "Acme member waiting" in member_page
    assert "Member personal diary" not in member_page and "Acme colleague notes" not in member_page


def _csv(browser) -> list[dict]:
    response = browser.get("/usage/export.csv")
    assert response.status_code == 200
    return list(csv.DictReader(io.StringIO(response.content.decode())))


def test_an_admins_csv_has_every_members_lines_and_a_members_csv_only_theirs(acme, admin, member):
    admin_rows = _csv(work_in(admin, acme.team))
    member_rows = _csv(work_in(member, acme.team))

    acme_done = {str(acme.jobs[name].pk) for name in ("owner_done", "admin_done", "member_done", "colleague_done")}
    assert {row["job_id"] for row in admin_rows} == acme_done
    assert {row["member"] for row in admin_rows} == {
        "owner@example.com", "admin@example.com", "member@example.com", "colleague@example.com",
    }  # fmt: skip
    for row in admin_rows:
        job = GenerationJob.objects.get(pk=row["job_id"])
        assert row["member"] == job.user.email and int(row["tokens_charged"]) == job.tokens_charged
    assert [(row["job_id"], row["member"]) for row in member_rows] == [
        (str(acme.jobs["member_done"].pk), "member@example.com")
    ]


def test_the_usage_page_shows_other_members_to_admins_only(acme, admin, member):
    admin_page = work_in(admin, acme.team).get("/usage/").content.decode()
    member_page = work_in(member, acme.team).get("/usage/").content.decode()

    assert "colleague@example.com" in admin_page
    assert "colleague@example.com" not in member_page and "admin@example.com" not in member_page


def test_the_usage_api_gives_members_their_own_numbers_and_admins_everyones(acme, admin, member):
    as_member = _api(acme.keys["member"].raw).get("/api/v1/usage").json()
    as_admin = _api(acme.keys["admin"].raw).get("/api/v1/usage").json()

    assert as_member["workspace"] == as_admin["workspace"] == acme.team.slug
    assert as_member["seats"] == SEATS
    assert as_member["member"]["email"] == "member@example.com"
    assert as_member["member"]["tokens"] == acme.jobs["member_done"].tokens_charged
    assert as_member["member"]["monthly_token_cap"] == 5_000
    assert "members" not in as_member
    assert {line["email"] for line in as_admin["members"]} == {
        "owner@example.com", "admin@example.com", "member@example.com", "colleague@example.com",
    }  # fmt: skip


def test_an_admin_cannot_make_an_admin_by_invitation_either(acme, admin, owner):
    """Making admins is the owner's alone; an invitation with role=admin is the same act."""
    Invitation.objects.filter(pk=acme.invitation.pk).update(revoked_at=acme.invitation.created_at)  # free a seat
    before = state(*acme.everywhere)

    response = work_in(admin, acme.team).post(
        "/workspace/members/invite/", {"email": "new-admin@example.com", "role": "admin"}, follow=True
    )

    assert "owner can" in response.content.decode()
    assert state(*acme.everywhere) == before
    assert mail.outbox == []
    # The owner may.
    work_in(owner, acme.team).post("/workspace/members/invite/", {"email": "new-admin@example.com", "role": "admin"})
    assert Invitation.objects.get(email="new-admin@example.com", revoked_at=None).role == WorkspaceRole.ADMIN


@pytest.mark.parametrize("who", ["admin", "member"])
@pytest.mark.parametrize(
    ("method", "path", "data"),
    [
        ("get", "{checkout_token}", None),
        ("post", "{checkout_token}", {"action": "pay"}),
        ("get", "{portal_token}", None),
        ("post", "{portal_token}", {"action": "cancel_now"}),
    ],
)
def test_the_sandbox_checkout_and_portal_of_ones_own_workspace_are_the_owners_alone(
    request, acme, who, method, path, data, deliveries
):
    browser = work_in(request.getfixturevalue(who), acme.team)
    before = state(*acme.everywhere)

    response = _send(browser, method, path, data, acme.ids)

    assert response.status_code == 404
    assert deliveries == []
    assert state(*acme.everywhere) == before


def test_the_owner_opens_the_sandbox_checkout_and_portal_of_their_workspace(acme, owner):
    browser = work_in(owner, acme.team)

    assert browser.get(acme.ids["checkout_token"]).status_code == 200
    assert browser.get(acme.ids["portal_token"]).status_code == 200
