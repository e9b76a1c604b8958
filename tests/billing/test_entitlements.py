from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from accounts.workspaces import workspace_personal
from billing.selectors import calendar_month, entitlements_for
from tests.factories import PlanFactory, SubscriptionFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def free_plan():
    return PlanFactory(slug="free", name="Free", is_default=True, monthly_token_allowance=1000)


def test_a_user_without_a_subscription_gets_the_free_plan_for_the_calendar_month(free_plan):
    now = datetime(2026, 12, 15, 10, 30, tzinfo=UTC)

    entitlements = entitlements_for(workspace_personal(UserFactory()), now=now)

    assert entitlements.plan == free_plan
    assert entitlements.subscription is None
    assert entitlements.period_start == datetime(2026, 12, 1, tzinfo=UTC)
    assert entitlements.period_end == datetime(2027, 1, 1, tzinfo=UTC)


def test_an_active_subscription_brings_its_plan_and_billing_period(free_plan):
    subscription = SubscriptionFactory(plan=PlanFactory(slug="pro", monthly_token_allowance=5000))

    entitlements = entitlements_for(subscription.workspace)

    assert entitlements.plan.slug == "pro"
    assert entitlements.monthly_token_allowance == 5000
    assert entitlements.period_start == subscription.current_period_start
    assert entitlements.period_end == subscription.current_period_end


@pytest.mark.parametrize("status", ["canceled", "incomplete", "unpaid"])
def test_a_subscription_that_is_not_active_gives_the_free_plan(free_plan, status):
    subscription = SubscriptionFactory(status=status)

    assert entitlements_for(subscription.workspace).plan == free_plan


def test_an_expired_subscription_gives_the_free_plan(free_plan):
    subscription = SubscriptionFactory(current_period_end=timezone.now() - timedelta(minutes=1))

    assert entitlements_for(subscription.workspace).plan == free_plan


def test_calendar_month_rolls_over_the_year():
    start, end = calendar_month(datetime(2026, 12, 31, 23, 59, tzinfo=UTC))

    assert (start, end) == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
