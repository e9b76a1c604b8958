from __future__ import annotations

import pytest

from accounts.workspaces import workspace_personal
from billing.models import BillingCustomer
from tests.factories import PlanFactory, UserFactory


@pytest.fixture
def free_plan(db):
    return PlanFactory(slug="free", name="Free", is_default=True, monthly_token_allowance=1_000, price_cents=0)


@pytest.fixture
def default_plan(free_plan):
    return free_plan


@pytest.fixture
def pro_plan(db):
    return PlanFactory(
        slug="pro", name="Pro", price_cents=1900, stripe_price_id="price_TestPro0001", monthly_token_allowance=100_000
    )


@pytest.fixture
def team_plan(db):
    return PlanFactory(
        slug="team", name="Team", price_cents=9900, stripe_price_id="price_TestTeam001", monthly_token_allowance=900_000
    )


@pytest.fixture
def customer(free_plan, pro_plan):
    """A user whose Stripe customer is cus_TestCustomer0001 (the fixtures' customer)."""
    user = UserFactory(email="pro@example.com")
    BillingCustomer.objects.create(workspace=workspace_personal(user), stripe_customer_id="cus_TestCustomer0001")
    return user


@pytest.fixture(autouse=True)
def _portal_check_forgotten():
    """The Portal settings check is remembered per process for ten minutes; each test starts anew."""
    from billing import gateway

    gateway._portal_checked.clear()
    yield
