"""Subscribing in real Chromium through the billing sandbox (no Stripe key configured)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from billing.models import Subscription
from tests.e2e.helpers import sign_in
from tests.factories import PlanFactory, UserFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def plans(db):
    free = PlanFactory(slug="free", name="Free", is_default=True, price_cents=0, monthly_token_allowance=50_000)
    pro = PlanFactory(
        slug="pro", name="Pro", price_cents=1900, monthly_token_allowance=2_000_000, stripe_price_id="price_sandbox_pro"
    )
    return free, pro


def test_a_new_user_subscribes_to_pro_and_sees_its_allowance(page, web_server, celery_worker, plans, artifacts_dir):
    user = UserFactory(email="buyer@example.com")
    sign_in(page, web_server.url, user.email)
    expect(page.get_by_test_id("quota-meter")).to_contain_text("Free")

    page.goto(web_server.url + "/pricing/")
    page.get_by_role("button", name="Subscribe to Pro").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Subscribe to Pro")
    page.screenshot(path=str(artifacts_dir / "sandbox-checkout.png"), full_page=True)
    page.get_by_role("button", name="Pay").click()

    # The success page waits for the webhook, then shows the plan.
    expect(page.get_by_role("heading", level=1)).to_contain_text("You are on Pro", timeout=30_000)
    page.goto(web_server.url + "/billing/")
    expect(page.get_by_test_id("current-plan")).to_contain_text("Your plan: Pro")
    expect(page.get_by_test_id("allowance")).to_have_text("2,000,000")
    expect(page.get_by_test_id("quota-meter")).to_contain_text("Pro")
    expect(page.get_by_test_id("quota-meter")).to_contain_text("0 / 2,000,000")
    page.screenshot(path=str(artifacts_dir / "billing-pro.png"), full_page=True)
    assert Subscription.objects.get(workspace__personal_of=user).status == "active"


def test_a_declined_payment_leaves_the_user_on_free_with_a_clear_message(page, web_server, celery_worker, plans):
    user = UserFactory(email="declined@example.com")
    sign_in(page, web_server.url, user.email)

    page.goto(web_server.url + "/pricing/")
    page.get_by_role("button", name="Subscribe to Pro").click()
    page.get_by_role("button", name="Decline").click()

    expect(page.get_by_role("alert")).to_contain_text("Your card was declined")
    expect(page.get_by_role("alert")).to_contain_text("still on your current plan")
    page.goto(web_server.url + "/billing/")
    expect(page.get_by_test_id("current-plan")).to_contain_text("Your plan: Free")
    assert not Subscription.objects.filter(workspace__personal_of=user).exists()


def test_the_success_page_alone_grants_nothing(client, plans):
    user = UserFactory(email="sneaky@example.com")
    client.force_login(user)

    page = client.get("/billing/success/?session_id=cs_test_forged")

    assert "Activating" in page.content.decode()
    assert client.get("/billing/status/").json() == {
        "plan": "free",
        "plan_name": "Free",
        "subscription_status": None,
        "active": False,
    }
