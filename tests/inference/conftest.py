from __future__ import annotations

import pytest

from tests.factories import PlanFactory, SubscriptionFactory, UserFactory


@pytest.fixture
def default_plan(db, tiny_model_path):
    """This directory's free plan: small limits, so tests reach them quickly."""
    return PlanFactory(
        slug="free",
        name="Free",
        is_default=True,
        monthly_token_allowance=5_000,
        max_new_tokens=200,
        max_prompt_tokens=100,
        max_concurrent_jobs=2,
        requests_per_minute=30,
        queue_priority="gen.low",
    )


@pytest.fixture
def pro_plan(db):
    return PlanFactory(slug="pro", name="Pro", monthly_token_allowance=1_000_000, max_new_tokens=1000)


@pytest.fixture
def free_plan(default_plan):
    return default_plan


@pytest.fixture
def subscriber(pro_plan, free_plan, tiny_model_path):
    """A user whose personal workspace subscribes to Pro."""
    user = UserFactory(email="pro@example.com")
    SubscriptionFactory(plan=pro_plan, user=user)
    return user
