"""The sandbox's events, delivered to the real webhook endpoint, move the subscription and the
quota the way Stripe's would."""

from __future__ import annotations

import json

import pytest

from accounts.workspaces import workspace_personal
from billing import sandbox
from billing.models import QuotaPeriod, Subscription
from billing.selectors import entitlements_for
from tests.billing import stripe_fakes as fake

pytestmark = pytest.mark.django_db


def _apply(client, events: list[dict]) -> None:
    for event in events:
        payload = fake.event(event["type"], event["object"], created=event["created"], event_id=event["id"])
        assert fake.deliver(client, payload).status_code == 200, payload


@pytest.fixture
def subscribed(client, customer, pro_plan):
    data = {"workspace": workspace_personal(customer).pk, "customer": "cus_TestCustomer0001"}
    _apply(client, sandbox.checkout_paid_events(data=data, plan=pro_plan))
    return Subscription.objects.get(workspace__personal_of=customer)


def test_paying_in_the_sandbox_checkout_grants_the_plan_and_its_allowance(subscribed, customer):
    assert subscribed.status == "active"
    assert entitlements_for(workspace_personal(customer)).plan.slug == "pro"
    assert QuotaPeriod.objects.get(workspace__personal_of=customer).allowance == 100_000


def test_an_upgrade_counts_once_its_invoice_is_paid_and_a_downgrade_gives_back_its_tokens(
    client, subscribed, customer, pro_plan, team_plan
):
    plans = {"pro": pro_plan, "team": team_plan}
    updated, paid = sandbox.portal_events(action="switch:team", subscription=subscribed, plans=plans)
    assert (updated["type"], paid["type"], paid["object"]["billing_reason"]) == (
        "customer.subscription.updated",
        "invoice.paid",
        "subscription_update",
    )

    _apply(client, [updated])
    assert entitlements_for(workspace_personal(customer)).plan.slug == "pro"
    assert QuotaPeriod.objects.get(workspace__personal_of=customer).allowance == 100_000

    _apply(client, [paid])
    assert entitlements_for(workspace_personal(customer)).plan.slug == "team"
    assert QuotaPeriod.objects.get(workspace__personal_of=customer).allowance == 900_000

    subscribed.refresh_from_db()
    _apply(client, sandbox.portal_events(action="switch:pro", subscription=subscribed, plans=plans))

    # An immediate downgrade credits Team's unused time, so the period is back to Pro's tokens.
    assert entitlements_for(workspace_personal(customer)).plan.slug == "pro"
    assert QuotaPeriod.objects.get(workspace__personal_of=customer).allowance == 100_000


def test_cancel_at_period_end_keeps_the_plan_until_then(client, subscribed, customer):
    _apply(client, sandbox.portal_events(action="cancel_at_period_end", subscription=subscribed, plans={}))

    subscribed.refresh_from_db()
    assert subscribed.cancel_at_period_end and subscribed.status == "active"
    assert entitlements_for(workspace_personal(customer)).plan.slug == "pro"

    _apply(client, sandbox.portal_events(action="renew", subscription=subscribed, plans={}))

    subscribed.refresh_from_db()
    assert subscribed.status == "canceled"
    assert entitlements_for(workspace_personal(customer)).plan.slug == "free"


def test_a_renewal_starts_a_new_period_with_a_fresh_allowance(client, subscribed, customer):
    QuotaPeriod.objects.filter(workspace__personal_of=customer).update(used=99_000)

    _apply(client, sandbox.portal_events(action="renew", subscription=subscribed, plans={}))

    periods = list(
        QuotaPeriod.objects.filter(workspace__personal_of=customer)
        .order_by("period_start")
        .values_list("used", "allowance")
    )
    assert periods == [(99_000, 100_000), (0, 100_000)]


def test_a_failed_renewal_payment_puts_the_subscription_in_its_grace_period(client, subscribed, customer):
    _apply(client, sandbox.portal_events(action="fail_payment", subscription=subscribed, plans={}))

    subscribed.refresh_from_db()
    assert subscribed.status == "past_due" and subscribed.payment_failed_at is not None
    assert entitlements_for(workspace_personal(customer)).in_grace


def test_the_sandbox_pages_refuse_a_forged_or_foreign_link(client, customer, other_user, pro_plan, monkeypatch):
    delivered = []
    monkeypatch.setattr("billing.tasks.sandbox_deliver.delay", lambda url, events: delivered.append(events))
    client.force_login(customer)
    forged = client.get("/billing/sandbox/checkout/forged-token/")
    assert forged.status_code == 404
    assert "Subscribe to Pro" not in forged.content.decode()

    # A genuine link, signed for a workspace the customer is not a member of.
    other = sandbox.checkout_url(
        workspace=workspace_personal(other_user), plan=pro_plan, customer_id="cus_x", success_url="/", cancel_url="/"
    )
    foreign = client.get(other)
    assert foreign.status_code == 404
    assert "Subscribe to Pro" not in foreign.content.decode()
    # Paying through either link sends Stripe's events for nobody.
    for link in ("/billing/sandbox/checkout/forged-token/", other):
        assert client.post(link, {"action": "pay"}).status_code == 404
    assert delivered == []


def test_the_sandbox_events_are_shaped_like_the_pinned_api_version(customer, pro_plan):
    workspace = workspace_personal(customer)
    events = sandbox.checkout_paid_events(data={"workspace": workspace.pk, "customer": "cus_1"}, plan=pro_plan)

    subscription = events[0]["object"]
    assert "current_period_start" not in subscription  # lives on the items since 2025-03-31
    assert (
        subscription["items"]["data"][0]["current_period_end"]
        > subscription["items"]["data"][0]["current_period_start"]
    )
    assert subscription["metadata"] == {"workspace_id": str(workspace.pk)}
    invoice = events[1]["object"]
    assert invoice["parent"]["subscription_details"]["subscription"] == subscription["id"]
    session = events[2]["object"]
    assert session["client_reference_id"] == str(workspace.pk)
    assert session["metadata"]["workspace_id"] == str(workspace.pk)
    assert json.loads(fake.event(events[0]["type"], subscription))["api_version"] == "2026-10-28.endive"
