"""The operator's workspace commands: workspace_list, workspace_admin and apikey_create --workspace.
Each goes through the same services as the members page, so each refusal is the service's."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from accounts import teams
from accounts.models import ApiKey, Membership, WorkspaceRole
from accounts.workspaces import membership_in, workspace_personal
from billing.models import QuotaPeriod
from core.models import AuditEvent
from inference.models import GenerationJob, JobStatus
from inference.services import job_submit
from tests.factories import ApiKeyFactory, PlanFactory, SubscriptionFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def default_plan(db, tiny_model_path):
    return PlanFactory(slug="free", name="Free", is_default=True, price_cents=0, monthly_token_allowance=10_000)


@pytest.fixture
def team_plan(default_plan):
    return PlanFactory(slug="team", name="Team", price_cents=1500, per_seat=True, monthly_token_allowance=50_000)


@pytest.fixture
def acme(owner, team_plan):
    """A team workspace of ``owner`` with 3 seats bought, 2 of them paid."""
    workspace = teams.workspace_create(owner=owner, name="Acme")
    SubscriptionFactory(workspace=workspace, plan=team_plan, seats=3, paid_seats=2)
    return workspace


def _run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def _rows(output: str) -> list[list[str]]:
    """The command's lines, header first, split into their tab-separated columns."""
    return [line.split("\t") for line in output.splitlines()]


# --- workspace_list -------------------------------------------------------------------------------


def test_workspace_list_prints_each_workspace_with_plan_seats_members_and_owner(owner, other_user, acme):
    teams.member_add(workspace=acme, user=other_user, role=WorkspaceRole.MEMBER, seats=3)
    personal = workspace_personal(other_user)

    header, *rows = _rows(_run("workspace_list"))

    assert header == ["slug", "name", "plan", "seats bought/paid", "members", "owner"]
    by_slug = {row[0]: row for row in rows}
    assert by_slug[acme.slug] == [acme.slug, "Acme", "team", "3/2", "2", "owner@example.com"]
    assert by_slug[personal.slug] == [personal.slug, personal.name, "free", "1/1", "1", "other@example.com"]
    assert [row[0] for row in rows] == sorted(by_slug)  # one line each, by slug


def test_workspace_list_marks_a_comped_plan(owner, team_plan):
    workspace = teams.workspace_create(owner=owner, name="Partner")
    SubscriptionFactory(workspace=workspace, plan=team_plan, seats=4, paid_seats=4, is_comp=True)

    rows = {row[0]: row for row in _rows(_run("workspace_list"))[1:]}

    assert rows[workspace.slug][2:4] == ["team (comp)", "4/4"]


def test_workspace_list_with_an_email_shows_only_that_persons_workspaces_and_role(owner, other_user, acme):
    teams.member_add(workspace=acme, user=other_user, role=WorkspaceRole.ADMIN, seats=3)
    theirs = workspace_personal(other_user)
    workspace_personal(owner)  # someone else's workspace: not listed

    header, *rows = _rows(_run("workspace_list", "--email", "OTHER@example.com"))

    assert header[-1] == "role"
    assert sorted((row[0], row[-1]) for row in rows) == sorted([(acme.slug, "admin"), (theirs.slug, "owner")])


def test_workspace_list_with_an_unknown_email_says_so(owner):
    with pytest.raises(CommandError, match=r"No user with the email nobody@example\.com"):
        _run("workspace_list", "--email", "nobody@example.com")


# --- workspace_admin add-member -------------------------------------------------------------------


def test_add_member_adds_them_with_the_role_and_audits_it(acme, other_user):
    output = _run("workspace_admin", acme.slug, "add-member", other_user.email, "admin")

    membership = membership_in(other_user, acme)
    assert membership is not None and membership.role == WorkspaceRole.ADMIN
    assert f"Added {other_user.email} to {acme.slug} as admin" in output
    assert AuditEvent.objects.filter(action="member_added", user=other_user, workspace=acme).count() == 1


def test_add_member_is_refused_when_every_bought_seat_is_taken(acme, other_user):
    teams.member_add(workspace=acme, user=other_user, role=WorkspaceRole.MEMBER, seats=3)
    third = UserFactory(email="third@example.com")
    teams.invitation_create(workspace=acme, email="invited@example.com", role=WorkspaceRole.MEMBER, seats=3)

    with pytest.raises(CommandError, match="All 3 seats of Acme are taken"):
        _run("workspace_admin", acme.slug, "add-member", third.email, "member")

    assert membership_in(third, acme) is None
    assert Membership.objects.filter(workspace=acme).count() == 2


def test_add_member_to_a_workspace_without_a_per_seat_plan_is_refused(owner, other_user):
    lone = teams.workspace_create(owner=owner, name="Lone")  # on the free plan: one seat, the owner's

    with pytest.raises(CommandError, match="All 1 seat of Lone are taken"):
        _run("workspace_admin", lone.slug, "add-member", other_user.email, "member")

    assert membership_in(other_user, lone) is None


def test_add_member_as_owner_is_refused_with_the_services_reason(acme, other_user):
    with pytest.raises(CommandError, match="ownership is handed over instead"):
        _run("workspace_admin", acme.slug, "add-member", other_user.email, "owner")

    assert membership_in(other_user, acme) is None


def test_adding_someone_already_there_changes_nothing(acme, other_user):
    teams.member_add(workspace=acme, user=other_user, role=WorkspaceRole.MEMBER, seats=3)

    output = _run("workspace_admin", acme.slug, "add-member", other_user.email, "admin")

    assert "already a member" in output
    assert membership_in(other_user, acme).role == WorkspaceRole.MEMBER
    assert AuditEvent.objects.filter(action="member_added", user=other_user).count() == 1


def test_an_unknown_slug_or_email_says_what_to_do(acme):
    with pytest.raises(CommandError, match=r"No workspace with the slug 'nope'.*workspace_list"):
        _run("workspace_admin", "nope", "add-member", "owner@example.com", "member")
    with pytest.raises(CommandError, match=r"No user with the email ghost@example\.com.*sign up first"):
        _run("workspace_admin", acme.slug, "add-member", "ghost@example.com", "member")


# --- workspace_admin remove-member ----------------------------------------------------------------


def test_remove_member_revokes_their_keys_and_stops_their_jobs(acme, other_user):
    member = teams.member_add(workspace=acme, user=other_user, role=WorkspaceRole.MEMBER, seats=3)
    key = ApiKeyFactory(user=other_user, workspace=acme)
    job = job_submit(member=member, prompt="Hello there", max_new_tokens=10)
    own_key = ApiKeyFactory(user=other_user)  # in their personal workspace: not touched

    output = _run("workspace_admin", acme.slug, "remove-member", other_user.email)

    assert membership_in(other_user, acme) is None
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None
    assert ApiKey.objects.get(pk=own_key.pk).revoked_at is None
    assert GenerationJob.objects.get(pk=job.pk).status == JobStatus.CANCELLED
    assert QuotaPeriod.objects.get(workspace=acme).reserved == 0
    assert "1 job(s) stopped" in output
    assert AuditEvent.objects.filter(action="member_removed", user=other_user, workspace=acme).exists()


def test_remove_member_refuses_the_owner(acme, owner):
    with pytest.raises(CommandError, match="owner cannot be removed"):
        _run("workspace_admin", acme.slug, "remove-member", owner.email)

    assert membership_in(owner, acme).role == WorkspaceRole.OWNER


def test_remove_member_of_someone_not_in_the_workspace_says_so(acme, other_user):
    with pytest.raises(CommandError, match=r"not a member of .*workspace_list --email"):
        _run("workspace_admin", acme.slug, "remove-member", other_user.email)

    assert not AuditEvent.objects.filter(action="member_removed").exists()


# --- workspace_admin set-cap ----------------------------------------------------------------------


def test_set_cap_sets_and_none_lifts_the_members_cap(acme, other_user):
    teams.member_add(workspace=acme, user=other_user, role=WorkspaceRole.MEMBER, seats=3)

    output = _run("workspace_admin", acme.slug, "set-cap", other_user.email, "50,000")
    capped = membership_in(other_user, acme).monthly_token_cap
    _run("workspace_admin", acme.slug, "set-cap", other_user.email, "none")

    assert capped == 50_000 and "50,000 tokens" in output
    assert membership_in(other_user, acme).monthly_token_cap is None
    caps = AuditEvent.objects.filter(action="member_cap_set", user=other_user, workspace=acme).order_by("created_at")
    assert [event.detail["monthly_token_cap"] for event in caps] == [50_000, None]


def test_set_cap_refuses_what_is_not_a_number_and_keeps_the_cap(acme, other_user):
    teams.member_add(workspace=acme, user=other_user, role=WorkspaceRole.MEMBER, seats=3)
    _run("workspace_admin", acme.slug, "set-cap", other_user.email, "1000")

    with pytest.raises(CommandError, match="A cap is a whole number of tokens"):
        _run("workspace_admin", acme.slug, "set-cap", other_user.email, "lots")
    with pytest.raises(CommandError, match="A cap is at most"):
        _run("workspace_admin", acme.slug, "set-cap", other_user.email, str(teams.MAX_TOKEN_CAP + 1))

    assert membership_in(other_user, acme).monthly_token_cap == 1000


def test_set_cap_on_someone_not_in_the_workspace_says_so(acme, other_user):
    with pytest.raises(CommandError, match="not a member of"):
        _run("workspace_admin", acme.slug, "set-cap", other_user.email, "1000")


# --- apikey_create --workspace --------------------------------------------------------------------


def test_apikey_create_with_a_workspace_makes_a_key_that_acts_there(acme, other_user):
    teams.member_add(workspace=acme, user=other_user, role=WorkspaceRole.MEMBER, seats=3)

    raw = _run("apikey_create", "--email", other_user.email, "--name", "ci", "--workspace", acme.slug).strip()

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    response = client.get("/api/v1/usage")
    assert response.status_code == 200, response.content
    assert (response.json()["workspace"], response.json()["member"]["email"]) == (acme.slug, other_user.email)
    assert ApiKey.objects.get(user=other_user).workspace == acme


def test_apikey_create_without_a_workspace_acts_in_the_personal_one(other_user):
    raw = _run("apikey_create", "--email", other_user.email, "--name", "laptop").strip()

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get("/api/v1/usage").json()["workspace"] == workspace_personal(other_user).slug


def test_apikey_create_refuses_a_workspace_the_user_is_not_in(acme, other_user):
    with pytest.raises(CommandError, match=f"not a member of {re.escape(acme.slug)}"):
        _run("apikey_create", "--email", other_user.email, "--name", "ci", "--workspace", acme.slug)

    assert not ApiKey.objects.filter(user=other_user).exists()


def test_apikey_create_with_an_unknown_workspace_or_email_says_so(acme, owner):
    with pytest.raises(CommandError, match="No workspace with the slug 'nope'"):
        _run("apikey_create", "--email", owner.email, "--name", "ci", "--workspace", "nope")
    with pytest.raises(CommandError, match=r"No user with the email ghost@example\.com"):
        _run("apikey_create", "--email", "ghost@example.com", "--name", "ci")

    assert not ApiKey.objects.exists()
