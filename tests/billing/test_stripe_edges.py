"""Stripe as it really behaves, at the HTTP boundary: one subscription per customer whatever the
tabs and retries, prices that really change, errors that become messages, a reconcile that skips
what it cannot apply, and signed bodies that are not events."""

from __future__ import annotations

import io
import time

import pytest
from django.core.management import call_command

from accounts.workspaces import workspace_personal
from billing.models import Plan, Subscription, WebhookEvent
from billing.selectors import entitlements_for
from billing.services.plans import plan_stripe_sync
from billing.stripe_client import sign
from core.models import AuditAction, AuditEvent
from tests.billing import stripe_fakes as fake
from tests.factories import SubscriptionFactory

pytestmark = pytest.mark.django_db
EMPTY = {"object": "list", "data": [], "has_more": False}


def _paths(stripe) -> list[tuple[str, str]]:
    return [(r["method"], r["path"]) for r in stripe.requests]


def test_checkout_is_refused_while_stripe_shows_a_live_subscription_the_mirror_lacks(
    client, customer, pro_plan, live_stripe
):
    past_due = fake.subscription(id="sub_Elsewhere0001", status="past_due")
    stripe = live_stripe(
        {
            ("GET", "/v1/subscriptions"): {"object": "list", "data": [past_due], "has_more": False},
            ("GET", "/v1/billing_portal/configurations"): fake.portal_configurations("always_invoice"),
            ("POST", "/v1/billing_portal/sessions"): {"id": "bps_1", "url": "https://billing.stripe.com/p/1"},
        }
    )
    client.force_login(customer)

    response = client.post("/billing/subscribe/pro/")

    assert response.url == "https://billing.stripe.com/p/1"  # sent to change the one they have
    assert ("POST", "/v1/checkout/sessions") not in _paths(stripe)


def test_an_open_session_for_another_plan_is_expired_and_one_for_the_same_plan_reused(
    client, customer, pro_plan, team_plan, live_stripe
):
    team_session = {
        "id": "cs_team",
        "object": "checkout.session",
        "url": "https://checkout.stripe.com/c/pay/cs_team",
        "metadata": {"price": "price_TestTeam001"},
    }
    stripe = live_stripe(
        {
            ("GET", "/v1/subscriptions"): EMPTY,
            ("GET", "/v1/checkout/sessions"): {"object": "list", "data": [team_session], "has_more": False},
            ("POST", "/v1/checkout/sessions/cs_team/expire"): {**team_session, "status": "expired"},
            ("POST", "/v1/checkout/sessions"): {"id": "cs_pro", "url": "https://checkout.stripe.com/c/pay/cs_pro"},
        }
    )
    client.force_login(customer)

    first = client.post("/billing/subscribe/pro/")

    assert first.url == "https://checkout.stripe.com/c/pay/cs_pro"
    assert ("POST", "/v1/checkout/sessions/cs_team/expire") in _paths(stripe)
    created = next(r for r in stripe.requests if r["path"] == "/v1/checkout/sessions" and r["method"] == "POST")
    assert int(created["data"]["expires_at"]) > 0

    stripe.requests.clear()
    stripe.responses[("GET", "/v1/checkout/sessions")] = {
        "object": "list",
        "data": [
            {
                "id": "cs_pro",
                "url": "https://checkout.stripe.com/c/pay/cs_pro",
                "metadata": {"price": "price_TestPro0001"},
            }
        ],
        "has_more": False,
    }
    again = client.post("/billing/subscribe/pro/")  # a second tab, or a retry an hour later

    assert again.url == "https://checkout.stripe.com/c/pay/cs_pro"
    assert ("POST", "/v1/checkout/sessions") not in _paths(stripe)


def test_a_second_subscription_arriving_by_webhook_is_cancelled_at_once_and_refunded(
    client, customer, pro_plan, live_stripe, staff_user
):
    kept = SubscriptionFactory(user=customer, plan=pro_plan, stripe_subscription_id="sub_First0000001")
    stripe = live_stripe(
        {
            ("DELETE", "/v1/subscriptions/sub_Second000001"): {"id": "sub_Second000001", "status": "canceled"},
            ("GET", "/v1/invoice_payments"): {
                "object": "list",
                "data": [
                    {
                        "id": "inpay_1",
                        "object": "invoice_payment",
                        "amount_paid": 1900,
                        "status": "paid",
                        "payment": {"type": "payment_intent", "payment_intent": "pi_Second0001"},
                    }
                ],
                "has_more": False,
            },
            ("POST", "/v1/refunds"): {"id": "re_1", "object": "refund"},
        }
    )
    now = int(time.time())
    second = fake.subscription(
        id="sub_Second000001",
        latest_invoice="in_Second0000001",
        current_period_start=now - 60,
        current_period_end=now + 30 * 86400,
    )

    response = fake.deliver(client, fake.event("customer.subscription.created", second))

    assert response.status_code == 200
    assert ("DELETE", "/v1/subscriptions/sub_Second000001") in _paths(stripe)
    refund = next(r for r in stripe.requests if r["path"] == "/v1/refunds")
    assert refund["data"]["payment_intent"] == "pi_Second0001"
    assert 1890 <= int(refund["data"]["amount"]) <= 1900  # created a minute ago: nearly all of it back
    assert Subscription.objects.get(stripe_subscription_id="sub_Second000001").status == "canceled"
    assert entitlements_for(workspace_personal(customer)).subscription == kept
    event = AuditEvent.objects.get(action=AuditAction.DUPLICATE_SUBSCRIPTION)
    assert event.detail["kept"] == "sub_First0000001"
    client.force_login(staff_user)
    assert "Second subscription cancelled and refunded" in client.get("/staff/business/").content.decode()


def test_changing_a_price_a_b_a_creates_a_new_active_price_each_time(live_stripe):
    stripe = live_stripe(
        {
            ("POST", "/v1/products"): {"id": "prod_1", "object": "product"},
            ("POST", "/v1/prices/"): {"id": "price_x", "object": "price", "active": False},
            ("POST", "/v1/prices"): {"id": "price_a1", "object": "price", "active": True},
        }
    )
    plan = Plan.objects.create(
        name="Scale", slug="scale", price_cents=4900, monthly_token_allowance=1, max_new_tokens=1,
        max_prompt_tokens=1, max_concurrent_jobs=1, requests_per_minute=1,
    )  # fmt: skip
    plan_stripe_sync(plan=plan)
    for cents, price in ((5900, "price_b1"), (4900, "price_a2")):
        stripe.responses[("POST", "/v1/prices")] = {"id": price, "object": "price", "active": True}
        plan.price_cents = cents
        plan_stripe_sync(plan=plan)

    keys = [r["headers"]["Idempotency-Key"] for r in stripe.requests if r["path"] == "/v1/prices"]
    assert len(keys) == len(set(keys)) == 3  # the third is not a replay of the first
    plan.refresh_from_db()
    assert plan.stripe_price_id == "price_a2"


def test_a_stripe_error_on_checkout_or_portal_is_a_message_not_a_500(client, customer, pro_plan, live_stripe):
    live_stripe({})  # every request answers 404 from "Stripe"
    client.force_login(customer)

    checkout = client.post("/billing/subscribe/pro/", follow=True)
    portal = client.post("/billing/portal/", follow=True)

    for response in (checkout, portal):
        assert response.status_code == 200
        assert "Nothing was charged; please try again" in response.content.decode()
        assert response.redirect_chain == [("/pricing/", 302)]
    assert not Subscription.objects.filter(workspace__personal_of=customer).exists()


def test_reconcile_skips_and_reports_what_it_cannot_apply_and_goes_on(customer, pro_plan, team_plan, live_stripe):
    SubscriptionFactory(user=customer, plan=pro_plan, stripe_subscription_id="sub_1QfTestPro000001")
    orphan = fake.subscription(id="sub_Orphan000001", customer="cus_Deleted00001", metadata={})
    upgraded = fake.subscription(price="price_TestTeam001")
    live_stripe({("GET", "/v1/subscriptions"): {"object": "list", "data": [orphan, upgraded], "has_more": False}})
    out, err = io.StringIO(), io.StringIO()

    call_command("billing_reconcile", "--dry-run", stdout=out, stderr=err)

    assert "sub_Orphan000001: skipped" in err.getvalue()
    assert "would change" in out.getvalue() and "2 subscription(s) checked" in out.getvalue()
    assert Subscription.objects.get(stripe_subscription_id="sub_1QfTestPro000001").plan == pro_plan

    call_command("billing_reconcile", stdout=out, stderr=err)

    assert Subscription.objects.get(stripe_subscription_id="sub_1QfTestPro000001").plan == team_plan


@pytest.mark.parametrize(
    "body",
    ["[1,2,3]", "{}", '{"id": "evt_1", "type": "invoice.paid", "created": 1764000000, "data": {}}', '"text"'],
    ids=["list", "empty-object", "no-data-object", "string"],
)
def test_a_signed_body_that_is_not_an_event_is_refused_with_400_and_recorded(client, customer, body):
    response = client.post(
        "/billing/webhook/", data=body, content_type="application/json", headers={"Stripe-Signature": sign(body)}
    )

    assert response.status_code == 400
    record = WebhookEvent.objects.get()
    assert (record.type, record.status) == ("malformed", "failed")
    assert record.error


@pytest.mark.parametrize("proration", ["create_prorations", "none"])
def test_the_portal_is_refused_while_its_plan_changes_would_not_be_invoiced_at_once(
    client, customer, pro_plan, live_stripe, proration, caplog
):
    SubscriptionFactory(user=customer, plan=pro_plan, stripe_subscription_id="sub_1")
    stripe = live_stripe(
        {
            ("GET", "/v1/billing_portal/configurations"): fake.portal_configurations(proration),
            ("POST", "/v1/billing_portal/sessions"): {"id": "bps_1", "url": "https://billing.stripe.com/p/1"},
        }
    )
    client.force_login(customer)

    response = client.post("/billing/portal/", follow=True)

    assert "billing portal is unavailable" in response.content.decode()
    assert ("POST", "/v1/billing_portal/sessions") not in _paths(stripe)
    assert "always_invoice" in caplog.text
