"""Against localstripe, a real stateful fake Stripe server on 127.0.0.1: Inkwell creates the
customer and the subscription through the official stripe library, localstripe delivers its own
signed webhooks to the live test server, and the local plan follows."""

from __future__ import annotations

import sys

import pytest
import requests
from django.conf import settings as django_settings

from accounts.workspaces import workspace_personal
from billing import stripe_client
from billing.models import Subscription
from billing.selectors import entitlements_for
from billing.services.subscriptions import customer_ensure
from tests.factories import PlanFactory, UserFactory
from tests.support import ManagedProcess, free_port, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def localstripe(artifacts_dir):
    port = free_port()
    server = ManagedProcess(
        [sys.executable, "-m", "localstripe", "--port", str(port), "--from-scratch"],
        env=None,
        log_path=artifacts_dir / "logs" / "localstripe.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(url + "/v1/customers", timeout=1, auth=("sk_test_x", "")).ok, timeout=30,
                   what="localstripe", process=server.process)  # fmt: skip
        yield url
    finally:
        server.stop()


@pytest.fixture
def stripe_at_localstripe(localstripe, web_server, settings):
    settings.STRIPE_SECRET_KEY = "sk_test_inkwell"
    settings.STRIPE_API_BASE = localstripe
    settings.BILLING_SANDBOX = False
    # localstripe signs its deliveries with the secret the web server verifies with.
    requests.post(
        f"{localstripe}/_config/webhooks/inkwell",
        data={"url": web_server.url + "/billing/webhook/", "secret": django_settings.STRIPE_WEBHOOK_SECRET},
        timeout=5,
    ).raise_for_status()
    return stripe_client.client()


def test_a_subscription_created_in_stripe_reaches_the_app_by_webhook_and_cancelling_ends_it(stripe_at_localstripe):
    stripe = stripe_at_localstripe
    PlanFactory(slug="free", name="Free", is_default=True, price_cents=0)
    pro = PlanFactory(slug="pro", name="Pro", price_cents=1900, stripe_price_id="inkwell_pro_monthly")
    stripe.v1.plans.create(
        params={"id": "inkwell_pro_monthly", "amount": 1900, "currency": "usd", "interval": "month",
                "product": {"name": "Inkwell Pro"}},
    )  # fmt: skip
    user = UserFactory(email="stripe@example.com")
    customer_id = customer_ensure(workspace=workspace_personal(user))
    card = stripe.v1.tokens.create(
        params={"card": {"number": "4242424242424242", "exp_month": "12", "exp_year": "2030", "cvc": "123"}}
    )
    stripe.v1.customers.payment_sources.create(customer_id, params={"source": card.id})

    remote = stripe.v1.subscriptions.create(
        params={"customer": customer_id, "items": [{"plan": "inkwell_pro_monthly"}]}
    )

    wait_until(
        lambda: Subscription.objects.filter(stripe_subscription_id=remote.id, status="active").exists(),
        timeout=30,
        what="the subscription webhook",
    )
    assert entitlements_for(workspace_personal(user)).plan == pro

    stripe.v1.subscriptions.cancel(remote.id)

    wait_until(
        lambda: Subscription.objects.filter(stripe_subscription_id=remote.id, status="canceled").exists(),
        timeout=30,
        what="the cancellation webhook",
    )
    assert entitlements_for(workspace_personal(user)).plan.slug == "free"
