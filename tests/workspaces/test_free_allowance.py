"""The free allowance is one per person: a new team workspace without a subscription has none,
or every click on "New workspace" would be another free allowance."""

from __future__ import annotations

import pytest

from accounts.teams import workspace_create
from accounts.workspaces import membership_in, membership_personal, workspace_personal
from billing.selectors import entitlements_for, quota_snapshot
from core.errors import QuotaExceeded
from inference.services import job_submit
from tests.factories import PlanFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db


def test_a_new_team_workspace_has_no_free_tokens_until_it_subscribes(owner, tiny_model_path):
    free_pool = entitlements_for(workspace_personal(owner)).opening_allowance
    team = workspace_create(owner=owner, name="Side project")

    entitlements = entitlements_for(team)
    assert entitlements.plan.is_default and entitlements.opening_allowance == 0
    assert quota_snapshot(team, entitlements=entitlements).remaining == 0
    with pytest.raises(QuotaExceeded) as refused:
        job_submit(member=membership_in(owner, team), prompt="Hello", max_new_tokens=5)
    assert refused.value.code == "insufficient_quota"

    # The person's own free allowance is untouched, and a subscription brings the team its pool.
    assert free_pool > 0
    assert job_submit(member=membership_personal(owner), prompt="Hello", max_new_tokens=5).status == "queued"
    team_plan = PlanFactory(slug="team", per_seat=True, monthly_token_allowance=7_000)
    SubscriptionFactory(workspace=team, plan=team_plan, seats=2, paid_seats=2)
    assert entitlements_for(team).opening_allowance == 14_000
    assert job_submit(member=membership_in(owner, team), prompt="Hello", max_new_tokens=5).workspace_id == team.pk


def test_the_new_workspace_page_and_banner_say_a_team_needs_a_subscription(client, owner):
    client.force_login(owner)

    created = client.post("/workspaces/new/", {"name": "Side project"}, follow=True).content.decode()
    generate = client.get("/generate/").content.decode()

    assert "It has no tokens until it is subscribed" in created
    assert "Side project has no tokens yet" in generate and "Subscribe it to a plan" in generate
    assert (
        "has no tokens yet"
        not in client.post(
            "/workspaces/switch/", {"workspace": workspace_personal(owner).pk}, follow=True
        ).content.decode()
    )
