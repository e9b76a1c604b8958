"""An owner deletes a team workspace: Stripe first, then everything of the workspace, never half."""

from __future__ import annotations

import pytest

from accounts.models import ApiKey, Membership, Workspace, WorkspaceRole
from accounts.teams import member_add, workspace_create
from accounts.workspaces import SESSION_KEY, membership_in, workspace_personal
from billing.models import BillingCustomer, QuotaPeriod, Subscription
from core.errors import ApplicationError
from core.models import AuditAction, AuditEvent
from inference.models import GenerationJob
from inference.services import job_submit
from saas import flows
from tests.factories import PASSWORD, ApiKeyFactory, PlanFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def team(owner, other_user, tiny_model_path):
    plan = PlanFactory(slug="team", per_seat=True, price_cents=9900, stripe_price_id="price_sandbox_team")
    workspace = workspace_create(owner=owner, name="Acme research")
    SubscriptionFactory(workspace=workspace, plan=plan, seats=3, paid_seats=3, stripe_subscription_id="sub_acme")
    BillingCustomer.objects.create(workspace=workspace, stripe_customer_id="cus_acme")
    member = member_add(workspace=workspace, user=other_user, role=WorkspaceRole.MEMBER, seats=3)
    ApiKeyFactory(user=other_user, workspace=workspace)
    job = job_submit(member=member, prompt="Quarterly notes", max_new_tokens=5)
    return workspace, job


def _as_owner(client, owner, workspace):
    client.force_login(owner)
    session = client.session
    session[SESSION_KEY] = workspace.pk
    session.save()
    # Deleting asks for the password again (allauth's re-authentication): typed a moment ago.
    assert client.post("/accounts/reauthenticate/", {"password": PASSWORD}).status_code == 302


def test_the_owner_deletes_the_workspace_after_typing_its_name(client, owner, other_user, team):
    workspace, _ = team
    _as_owner(client, owner, workspace)

    wrong = client.post("/workspace/delete/", {"confirm": "acme research"}, follow=True)
    assert "Type the workspace&#x27;s name" in wrong.content.decode()
    assert Workspace.objects.filter(pk=workspace.pk).exists()

    response = client.post("/workspace/delete/", {"confirm": "Acme research"}, follow=True)

    assert "Acme research was deleted" in response.content.decode()
    assert not Workspace.objects.filter(pk=workspace.pk).exists()
    for model in (Membership, ApiKey, GenerationJob, QuotaPeriod, Subscription, BillingCustomer):
        assert not model.objects.filter(workspace_id=workspace.pk).exists(), model
    # The people stay, in their own workspaces.
    assert membership_in(other_user, workspace_personal(other_user)) is not None
    assert AuditEvent.objects.filter(action=AuditAction.WORKSPACE_DELETED, actor=owner).get().detail["slug"]
    assert client.get("/generate/").status_code == 200  # back in the personal workspace


def test_nothing_is_deleted_when_stripe_cannot_be_told(client, owner, team, monkeypatch):
    workspace, job = team

    def refuse(*, workspace):
        raise ApplicationError("Our payment provider could not close your subscription just now.")

    monkeypatch.setattr(flows, "billing_close", refuse)
    _as_owner(client, owner, workspace)

    response = client.post("/workspace/delete/", {"confirm": "Acme research"}, follow=True)

    assert "was not deleted" in response.content.decode()
    job.refresh_from_db()
    assert job.status == "queued"
    assert Membership.objects.filter(workspace=workspace).count() == 2


def test_a_personal_workspace_and_a_non_owner_cannot_delete(client, owner, other_user, team):
    workspace, _ = team
    with pytest.raises(ApplicationError, match="deleted only with its account"):
        flows.workspace_close(workspace=workspace_personal(owner), actor=owner)

    client.force_login(other_user)
    session = client.session
    session[SESSION_KEY] = workspace.pk
    session.save()
    response = client.post("/workspace/delete/", {"confirm": "Acme research"})

    assert response.status_code == 403
    assert Workspace.objects.filter(pk=workspace.pk).exists()
