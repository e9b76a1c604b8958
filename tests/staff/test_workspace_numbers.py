"""The dashboard's workspace and seat numbers: a per-seat plan earns its price once per seat bought,
comps earn nothing, and personal workspaces are not teams."""

from __future__ import annotations

import pytest
from django.utils import timezone

from accounts import teams
from accounts.models import User, WorkspaceRole
from accounts.workspaces import workspace_personal
from billing.services.subscriptions import plan_comp
from staff.selectors import business_numbers
from tests.factories import PlanFactory, SubscriptionFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def plans(default_plan):
    pro = PlanFactory(slug="pro", name="Pro", price_cents=1900)
    team = PlanFactory(slug="team", name="Team", price_cents=1500, per_seat=True)
    return pro, team


def _team(name: str, *, plan, seats: int, members: int, **subscription):
    """A team workspace on ``plan`` with ``seats`` bought and ``members`` people in it (owner included)."""
    owner = UserFactory(email=f"owner@{name.lower()}.example")
    workspace = teams.workspace_create(owner=owner, name=name)
    SubscriptionFactory(workspace=workspace, plan=plan, seats=seats, **subscription)
    for i in range(members - 1):
        user = UserFactory(email=f"m{i}@{name.lower()}.example")
        teams.member_add(workspace=workspace, user=user, role=WorkspaceRole.MEMBER, seats=seats)
    return workspace


@pytest.fixture
def business(plans):
    """Two paying teams with different seat counts, a comped team, a canceled team and a personal
    subscriber, with every person's personal workspace made."""
    pro, team = plans
    _team("Acme", plan=team, seats=5, members=3, paid_seats=5)
    # Two seats just added: Stripe invoices the new quantity, so revenue counts all 7 bought.
    _team("Beta", plan=team, seats=7, members=2, paid_seats=5)
    partner = _team("Partner", plan=team, seats=1, members=1, status="canceled", canceled_at=timezone.now())
    plan_comp(workspace=partner, plan=team, days=30, seats=10)  # comped: no sale, no revenue
    solo = UserFactory(email="solo@example.com")
    SubscriptionFactory(user=solo, plan=pro)  # in solo's personal workspace
    people = list(User.objects.all())
    for person in people:
        workspace_personal(person)
    return {"pro": pro, "team": team, "people": len(people)}


def test_a_per_seat_plan_earns_its_price_for_every_seat_bought(business):
    numbers = business_numbers()

    team, pro = business["team"], business["pro"]
    assert numbers.by_plan["team"].subscribers == 2
    assert numbers.by_plan["team"].seats == 5 + 7
    assert numbers.by_plan["team"].mrr_cents == team.price_cents * (5 + 7)
    # The old sum, one price per subscription, would say 15 + 15 + 19 = 49.00.
    assert numbers.mrr == (team.price_cents * 12 + pro.price_cents) / 100 == 199.0


def test_seats_sold_and_seat_revenue_leave_out_comps_cancellations_and_other_plans(business):
    numbers = business_numbers()

    assert numbers.seats_sold == 12
    assert numbers.seat_mrr == business["team"].price_cents * 12 / 100 == 180.0


def test_team_workspaces_and_their_members_are_counted_apart_from_personal_ones(business):
    numbers = business_numbers()

    assert numbers.team_workspaces == 3  # Acme, Beta, Partner
    assert numbers.workspaces == 3 + business["people"]  # and everyone's personal one
    assert numbers.team_members == 3 + 2 + 1


def test_the_dashboard_shows_the_workspace_and_seat_numbers(client, staff_user, business):
    client.force_login(staff_user)

    page = client.get("/staff/business/").content.decode()

    assert 'data-testid="team-workspaces">3<' in page
    assert 'data-testid="team-members">6<' in page
    assert 'data-testid="seats-sold">12<' in page
    assert 'data-testid="seat-mrr">180.00<' in page
    assert 'data-testid="mrr">199.00<' in page
