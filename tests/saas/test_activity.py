"""The workspace's activity page: its owner reads the workspace's audit trail, newest first, and
nothing of another workspace; admins and members are refused."""

from __future__ import annotations

import pytest
from django.test import Client, RequestFactory

from accounts.models import WorkspaceRole
from accounts.teams import member_add, workspace_create
from accounts.workspaces import SESSION_KEY, workspace_personal
from core.audit import audit_record
from core.models import AuditAction, AuditEvent
from saas.teams import ACTIVITY_PAGE_SIZE
from tests.factories import PlanFactory, SubscriptionFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme(owner):
    plan = PlanFactory(slug="team", per_seat=True, price_cents=9900, stripe_price_id="price_sandbox_team")
    workspace = workspace_create(owner=owner, name="Acme")
    SubscriptionFactory(workspace=workspace, plan=plan, seats=5, paid_seats=5)
    return workspace


@pytest.fixture
def admin(acme):
    user = UserFactory(email="admin@example.com")
    member_add(workspace=acme, user=user, role=WorkspaceRole.ADMIN, seats=5)
    return user


@pytest.fixture
def member(acme):
    user = UserFactory(email="member@example.com")
    member_add(workspace=acme, user=user, role=WorkspaceRole.MEMBER, seats=5)
    return user


@pytest.fixture
def globex(other_user):
    """Another team, with its own events (a secret in them), owned by someone else."""
    workspace = workspace_create(owner=other_user, name="Globex")
    audit_record(action=AuditAction.WORKSPACE_RENAMED, user=other_user, actor=other_user, workspace=workspace,
                 name="globex-secret-name")  # fmt: skip
    return workspace


def browser_in(user, workspace) -> Client:
    client = Client()
    client.force_login(user)
    session = client.session
    session[SESSION_KEY] = workspace.pk
    session.save()
    return client


def _rows(response) -> list[str]:
    return [row.split('data-action="')[1].split('"')[0] for row in response.content.decode().split("<tr ")[1:]]


def test_the_owner_sees_the_workspaces_events_newest_first_with_who_when_and_where(owner, acme, member, globex):
    audit_record(action=AuditAction.MEMBER_CAP_SET, user=member, actor=owner, workspace=acme, cap=500,
                 request=RequestFactory().post("/", REMOTE_ADDR="203.0.113.7"))  # fmt: skip

    page = browser_in(owner, acme).get("/workspace/activity/")

    body = page.content.decode()
    assert page.status_code == 200
    assert _rows(page) == [AuditAction.MEMBER_CAP_SET, AuditAction.MEMBER_ADDED, AuditAction.WORKSPACE_CREATED]
    newest = body.split("<tr ")[1]
    assert "Member&#x27;s token cap set" in newest
    assert owner.email in newest and member.email in newest and "203.0.113.7" in newest
    assert "globex-secret-name" not in body and "Globex" not in body


def test_another_workspaces_events_never_show_even_when_the_session_names_it(owner, acme, other_user, globex):
    audit_record(action=AuditAction.API_KEY_CREATED, user=other_user, actor=other_user,
                 workspace=workspace_personal(other_user), name="rival-key")  # fmt: skip

    # The outsider's session names Acme, which they are not a member of: they work in their own.
    outsider = browser_in(other_user, acme).get("/workspace/activity/")
    # The owner of Acme, in Acme, sees none of Globex's nor the outsider's personal events.
    acme_owner = browser_in(owner, acme).get("/workspace/activity/")

    assert outsider.status_code == 200 and outsider.context["workspace"] == workspace_personal(other_user)
    assert set(_rows(outsider)) == {AuditAction.API_KEY_CREATED}
    assert AuditAction.MEMBER_ADDED not in _rows(outsider)
    for event in acme_owner.context["page"].object_list:
        assert event.workspace_id == acme.pk
    assert "rival-key" not in acme_owner.content.decode()


@pytest.mark.parametrize("role", ["admin", "member"])
def test_admins_and_members_are_refused_and_told_who_may(request, acme, role):
    user = request.getfixturevalue(role)

    response = browser_in(user, acme).get("/workspace/activity/")

    assert response.status_code == 403
    assert "Only the workspace&#x27;s owner can see the workspace&#x27;s activity" in response.content.decode()


def test_signed_out_goes_to_sign_in(client):
    response = client.get("/workspace/activity/")

    assert response.status_code == 302 and response.url.startswith("/accounts/login/")


def test_the_page_is_paginated_and_a_bad_page_number_is_not_an_error(owner, acme):
    AuditEvent.objects.bulk_create(
        AuditEvent(action=AuditAction.MEMBER_INVITED, workspace=acme, actor=owner, email=f"p{n}@example.com")
        for n in range(ACTIVITY_PAGE_SIZE + 5)
    )
    browser = browser_in(owner, acme)

    first = browser.get("/workspace/activity/")
    second = browser.get("/workspace/activity/?page=2")
    nonsense = browser.get("/workspace/activity/?page=abc")
    beyond = browser.get("/workspace/activity/?page=999")

    assert len(_rows(first)) == ACTIVITY_PAGE_SIZE
    assert "Older →" in first.content.decode()
    assert len(_rows(second)) == 5 + 1  # the rest, and the workspace's creation, oldest last
    assert _rows(second)[-1] == AuditAction.WORKSPACE_CREATED
    assert nonsense.status_code == 200 and nonsense.context["page"].number == 1
    assert beyond.status_code == 200 and beyond.context["page"].number == 2


def test_a_staff_read_shows_the_job_and_not_the_staff_members_address(owner, acme, staff_user):
    audit_record(action=AuditAction.STAFF_READ_TEXTS, user=owner, actor=staff_user, workspace=acme,
                 request=RequestFactory().get("/", REMOTE_ADDR="10.1.2.3"), job="1d2c3b4a")  # fmt: skip

    page = browser_in(owner, acme).get("/workspace/activity/")

    newest = page.content.decode().split("<tr ")[1]
    assert "Staff read a customer&#x27;s texts" in newest
    assert "1d2c3b4a" in newest and staff_user.email in newest
    assert "10.1.2.3" not in newest


def test_the_members_page_links_the_activity_for_the_owner_only(owner, acme, admin):
    as_owner = browser_in(owner, acme).get("/workspace/members/").content.decode()
    as_admin = browser_in(admin, acme).get("/workspace/members/").content.decode()

    assert 'href="/workspace/activity/"' in as_owner
    assert 'href="/workspace/activity/"' not in as_admin
