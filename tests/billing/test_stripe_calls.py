"""What the stripe library sends to Stripe: checked at the HTTP boundary, with a real Stripe key
configured (so the sandbox is off) and a recording HTTP client in place of Stripe's servers."""

from __future__ import annotations

import pytest

from accounts.workspaces import workspace_personal
from billing.models import BillingCustomer, Plan, Subscription
from billing.services.plans import plan_stripe_sync
from billing.services.webhooks import subscriptions_reconcile
from tests.billing import stripe_fakes as fake
from tests.factories import SubscriptionFactory

pytestmark = pytest.mark.django_db


def test_subscribing_creates_the_customer_once_and_a_checkout_session_for_the_plans_price(
    client, customer, pro_plan, live_stripe
):
    BillingCustomer.objects.all().delete()
    stripe = live_stripe(
        {
            ("POST", "/v1/customers"): {"id": "cus_New000001", "object": "customer"},
            ("GET", "/v1/subscriptions"): {"object": "list", "data": [], "has_more": False},
            ("GET", "/v1/checkout/sessions"): {"object": "list", "data": [], "has_more": False},
            ("POST", "/v1/checkout/sessions"): {
                "id": "cs_test_1",
                "object": "checkout.session",
                "url": "https://checkout.stripe.com/c/pay/cs_test_1",
            },
        }
    )
    workspace = workspace_personal(customer)
    client.force_login(customer)

    first = client.post("/billing/subscribe/pro/")
    second = client.post("/billing/subscribe/pro/")

    assert first.status_code == second.status_code == 302
    assert first.url == second.url == "https://checkout.stripe.com/c/pay/cs_test_1"
    customers = [r for r in stripe.requests if r["path"] == "/v1/customers"]
    sessions = [r for r in stripe.requests if r["path"] == "/v1/checkout/sessions" and r["method"] == "POST"]
    assert len(customers) == 1  # created once, then reused
    assert customers[0]["data"]["email"] == "pro@example.com"
    assert customers[0]["data"]["metadata[workspace_id]"] == str(workspace.pk)
    assert customers[0]["headers"]["Idempotency-Key"] == f"inkwell-customer-ws-{workspace.pk}"
    assert BillingCustomer.objects.get(workspace__personal_of=customer).stripe_customer_id == "cus_New000001"
    session = sessions[0]
    assert session["data"]["mode"] == "subscription"
    assert session["data"]["customer"] == "cus_New000001"
    assert session["data"]["line_items[0][price]"] == "price_TestPro0001"
    assert session["data"]["line_items[0][quantity]"] == "1"
    assert session["data"]["success_url"] == "http://testserver/billing/success/?session_id={CHECKOUT_SESSION_ID}"
    assert session["data"]["cancel_url"] == "http://testserver/billing/cancel/"
    assert session["data"]["client_reference_id"] == str(workspace.pk)
    assert session["data"]["metadata[workspace_id]"] == str(workspace.pk)
    assert session["data"]["subscription_data[metadata][workspace_id]"] == str(workspace.pk)
    assert session["headers"]["Idempotency-Key"].startswith(f"inkwell-checkout-ws-{workspace.pk}-price_TestPro0001-")
    assert session["headers"]["Stripe-Version"] == "2026-10-28.endive"
    assert not Subscription.objects.exists()  # nothing is granted before the webhook


def test_a_subscriber_is_sent_to_the_portal_instead_of_a_second_checkout(client, customer, pro_plan, live_stripe):
    SubscriptionFactory(user=customer, plan=pro_plan, stripe_subscription_id="sub_1")
    stripe = live_stripe(
        {
            ("GET", "/v1/billing_portal/configurations"): fake.portal_configurations("always_invoice"),
            ("POST", "/v1/billing_portal/sessions"): {"id": "bps_1", "url": "https://billing.stripe.com/p/session/1"},
        }
    )
    client.force_login(customer)

    response = client.post("/billing/subscribe/pro/")

    assert response.url == "https://billing.stripe.com/p/session/1"
    assert [r["path"] for r in stripe.requests] == ["/v1/billing_portal/configurations", "/v1/billing_portal/sessions"]
    portal = stripe.requests[1]
    assert portal["data"] == {"customer": "cus_TestCustomer0001", "return_url": "http://testserver/billing/"}
    assert portal["headers"]["Idempotency-Key"].startswith(f"inkwell-portal-ws-{workspace_personal(customer).pk}-")


def test_reconcile_repairs_a_subscription_whose_webhooks_were_lost(customer, pro_plan, team_plan, live_stripe):
    SubscriptionFactory(user=customer, plan=pro_plan, stripe_subscription_id="sub_1QfTestPro000001")
    upgraded = fake.subscription(price="price_TestTeam001", cancel_at_period_end=True)
    live_stripe({("GET", "/v1/subscriptions"): {"object": "list", "data": [upgraded], "has_more": False}})

    changes = subscriptions_reconcile().changed

    assert len(changes) == 1
    assert "pro/active" in changes[0] and "team/active" in changes[0] and "/cancels" in changes[0]
    subscription = Subscription.objects.get()
    assert (subscription.plan, subscription.cancel_at_period_end) == (team_plan, True)
    assert subscriptions_reconcile().changed == []  # nothing left to repair


def test_saving_a_paid_plan_creates_its_product_and_price_and_a_new_amount_archives_the_old_price(live_stripe):
    stripe = live_stripe(
        {
            ("POST", "/v1/products"): {"id": "prod_1", "object": "product"},
            ("POST", "/v1/prices/price_1"): {"id": "price_1", "object": "price", "active": False},
            ("POST", "/v1/prices"): {"id": "price_1", "object": "price"},
        }
    )
    plan = Plan.objects.create(
        name="Scale", slug="scale", price_cents=4900, monthly_token_allowance=1, max_new_tokens=1,
        max_prompt_tokens=1, max_concurrent_jobs=1, requests_per_minute=1,
    )  # fmt: skip

    plan_stripe_sync(plan=plan)
    plan.refresh_from_db()
    assert (plan.stripe_product_id, plan.stripe_price_id) == ("prod_1", "price_1")
    created = next(r for r in stripe.requests if r["path"] == "/v1/prices")
    assert created["data"]["unit_amount"] == "4900" and created["data"]["recurring[interval]"] == "month"
    assert created["headers"]["Idempotency-Key"].startswith(f"inkwell-price-{plan.pk}-4900-")

    stripe.responses[("POST", "/v1/prices")] = {"id": "price_2", "object": "price"}
    stripe.requests.clear()
    plan.price_cents = 5900
    plan_stripe_sync(plan=plan)

    plan.refresh_from_db()
    assert plan.stripe_price_id == "price_2"
    paths = [(r["path"], r["data"]) for r in stripe.requests]
    assert ("/v1/prices/price_1", {"active": "false"}) in paths
    assert any(path == "/v1/prices" and data["unit_amount"] == "5900" for path, data in paths)


def test_a_user_on_a_comped_plan_is_told_instead_of_sent_to_a_portal_they_do_not_have(client, free_plan, pro_plan):
    from billing.services.subscriptions import plan_comp
    from tests.factories import UserFactory

    user = UserFactory(email="partner@example.com")
    plan_comp(workspace=workspace_personal(user), plan=pro_plan, days=30)
    client.force_login(user)

    response = client.post("/billing/subscribe/pro/", follow=True)

    assert response.status_code == 200
    assert response.redirect_chain == [("/billing/", 302)]
    assert "granted by Inkwell" in response.content.decode()
    assert list(Subscription.objects.filter(workspace__personal_of=user).values_list("plan", "is_comp")) == [
        (pro_plan.pk, True)
    ]
