"""Workspaces in the admin: found by slug, name or a member's email; their members and invitations
shown but not edited there; tokens and plans granted through billing's services."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts import teams
from accounts.models import Membership, WorkspaceRole
from billing.models import QuotaPeriod, QuotaTopUp, Subscription
from billing.selectors import entitlements_for
from core.models import AuditAction, AuditEvent
from tests.factories import PlanFactory, SubscriptionFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def default_plan(db):
    return PlanFactory(slug="free", name="Free", is_default=True, price_cents=0, monthly_token_allowance=1000)


@pytest.fixture
def team_plan(default_plan):
    return PlanFactory(slug="team", name="Team", price_cents=1500, per_seat=True, monthly_token_allowance=10_000)


@pytest.fixture
def staff(client, staff_user):
    client.force_login(staff_user)
    return staff_user


@pytest.fixture
def acme(owner, other_user, team_plan):
    """A team with 3 seats: the owner, other_user as a capped member, and an open invitation."""
    workspace = teams.workspace_create(owner=owner, name="Acme")
    SubscriptionFactory(workspace=workspace, plan=team_plan, seats=3)
    member = teams.member_add(workspace=workspace, user=other_user, role=WorkspaceRole.MEMBER, seats=3)
    teams.member_cap_set(membership=member, cap=5000)
    teams.invitation_create(workspace=workspace, email="invited@example.com", role=WorkspaceRole.MEMBER, seats=3)
    return workspace


def _url(workspace=None, page: str = "change") -> str:
    return "/admin/accounts/workspace/" + (f"{workspace.pk}/{page}/" if workspace else "")


@pytest.mark.parametrize("url", ["/admin/accounts/workspace/", "/admin/accounts/membership/",
                                 "/admin/accounts/invitation/"])  # fmt: skip
def test_a_non_staff_user_gets_no_workspace_admin_page(client, acme, other_user, url):
    client.force_login(other_user)

    response = client.get(url)

    assert response.status_code == 404  # the admin's existence is not shown
    page = response.content.decode()
    assert "There is nothing here, or it is not yours to see." in page and "to change</h1>" not in page


def test_the_workspace_list_opens_for_staff_and_finds_a_team_by_a_members_email(client, staff, acme, owner):
    listed = client.get(_url()).content.decode()
    found = client.get(_url(), {"q": "other@example"}).content.decode()
    teams_only = client.get(_url(), {"kind": "team"}).content.decode()

    assert "Select workspace to change" in listed and "Acme" in listed
    assert f">{acme.slug}<" in found and "1 result" in found
    assert "Acme" in teams_only and "(personal)" not in teams_only


def test_the_workspace_page_shows_plan_seats_members_and_invitations_read_only(client, staff, acme):
    response = client.get(_url(acme))
    page = response.content.decode()

    assert response.status_code == 200
    assert "Team: active" in page
    assert "3 to fill (3 paid): 2 member(s), 1 open invitation(s)" in page
    assert "other@example.com" in page and "invited@example.com" in page
    assert 'name="memberships-0-role"' not in page and 'name="memberships-1-monthly_token_cap"' not in page
    assert 'name="invitations-0-email"' not in page


def test_saving_the_workspace_page_renames_it_and_changes_no_member(client, staff, acme, other_user):
    response = client.post(
        _url(acme),
        {"name": "  Acme   Corp ", "memberships-TOTAL_FORMS": "2", "memberships-INITIAL_FORMS": "2",
         "memberships-0-id": "", "memberships-0-role": "owner", "memberships-0-monthly_token_cap": "",
         "invitations-TOTAL_FORMS": "1", "invitations-INITIAL_FORMS": "1"},
    )  # fmt: skip

    assert response.status_code == 302
    acme.refresh_from_db()
    assert acme.name == "Acme Corp"  # through teams.workspace_rename, which tidies the spaces
    renamed = AuditEvent.objects.get(action=AuditAction.WORKSPACE_RENAMED, workspace=acme)
    assert (renamed.actor, renamed.detail["name_to"]) == (staff, "Acme Corp")
    member = Membership.objects.get(workspace=acme, user=other_user)
    assert (member.role, member.monthly_token_cap) == (WorkspaceRole.MEMBER, 5000)


def test_a_workspace_cannot_be_added_or_deleted_in_the_admin(client, staff, acme):
    assert client.get(_url() + "add/").status_code == 403
    assert client.post(_url(acme, "delete"), {"post": "yes"}).status_code == 403
    assert client.get(_url()).content.decode().count('value="delete_selected"') == 0

    acme.refresh_from_db()  # still there


def test_the_top_up_action_asks_then_tops_up_the_workspaces_pool_and_audits_it(client, staff, acme, owner):
    action = {"action": "grant_a_token_top-up", "_selected_action": [acme.pk]}
    form = client.post(_url(), action).content.decode()

    response = client.post(_url(), {**action, "tokens": 500, "reason": "support #21", "apply": "1"})

    assert "Grant a token top-up" in form and "For: Acme" in form
    assert response.status_code == 302
    period = QuotaPeriod.objects.get(workspace=acme)
    assert period.allowance == entitlements_for(acme).monthly_token_allowance + 500 == 30_000 + 500
    assert QuotaTopUp.objects.get().workspace == acme
    event = AuditEvent.objects.get(action="top_up")
    assert (event.workspace, event.actor, event.detail["tokens"]) == (acme, staff, 500)
    assert not QuotaPeriod.objects.filter(workspace__personal_of=owner).exists()  # not the owner's own


def test_the_comp_action_gives_the_workspace_the_plan_with_its_seats(client, staff, team_plan, owner):
    workspace = teams.workspace_create(owner=owner, name="Partner")

    response = client.post(
        _url(),
        {"action": "comp_a_plan", "_selected_action": [workspace.pk], "plan": team_plan.pk, "days": 30, "seats": 4,
         "apply": "1"},
    )  # fmt: skip

    assert response.status_code == 302
    comp = Subscription.objects.get(workspace=workspace)
    assert (comp.is_comp, comp.seats) == (True, 4)
    entitlements = entitlements_for(workspace)
    assert (entitlements.plan, entitlements.seats) == (team_plan, 4)
    assert QuotaPeriod.objects.get(workspace=workspace).allowance == 4 * team_plan.monthly_token_allowance
    event = AuditEvent.objects.get(action="plan_comped")
    assert (event.workspace, event.actor, event.detail["days"]) == (workspace, staff, 30)


def test_an_invalid_top_up_is_asked_again_and_grants_nothing(client, staff, acme):
    response = client.post(
        _url(),
        {"action": "grant_a_token_top-up", "_selected_action": [acme.pk], "tokens": 0, "reason": "x", "apply": "1"},
    )

    assert (
        response.status_code == 200 and "Ensure this value is greater than or equal to 1" in response.content.decode()
    )
    assert not QuotaTopUp.objects.exists()


def test_members_and_invitations_have_read_only_lists(client, staff, acme):
    member = Membership.objects.get(workspace=acme, user__email="other@example.com")

    members = client.get("/admin/accounts/membership/", {"q": "other@example.com"}).content.decode()
    invitations = client.get("/admin/accounts/invitation/").content.decode()
    change = client.post(f"/admin/accounts/membership/{member.pk}/change/", {"role": "admin"})

    assert "Acme" in members and "invited@example.com" in invitations
    assert change.status_code == 403
    member.refresh_from_db()
    assert member.role == WorkspaceRole.MEMBER


@pytest.mark.parametrize("url", ["/admin/accounts/workspace/", "/admin/accounts/membership/",
                                 "/admin/accounts/invitation/"])  # fmt: skip
def test_workspace_admin_lists_make_no_query_per_row(client, staff, team_plan, url):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url).status_code == 200
        return len(captured)

    def add_teams(n: int) -> None:
        for _ in range(n):
            owner = UserFactory()
            workspace = teams.workspace_create(owner=owner, name="Team")
            teams.invitation_create(
                workspace=workspace, email="x@example.com", role="member", seats=2, invited_by=owner
            )

    add_teams(1)
    queries()  # warm per-process caches (content types, permissions)
    few = queries()
    add_teams(4)
    assert queries() == few
