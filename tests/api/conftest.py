from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.factories import ApiKeyFactory, PlanFactory


@pytest.fixture
def default_plan(db, tiny_model_path):
    return PlanFactory(
        slug="free", name="Free", is_default=True, price_cents=0, api_access=True, monthly_token_allowance=100_000,
        max_new_tokens=200, max_prompt_tokens=200, max_concurrent_jobs=50, requests_per_minute=100,
    )  # fmt: skip


@pytest.fixture
def api_plan(default_plan):
    return default_plan


@pytest.fixture
def api_key(owner) -> str:
    return ApiKeyFactory(user=owner).raw


@pytest.fixture
def api(api_key) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key}")
    return client
