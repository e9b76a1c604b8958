"""Tokens follow payment: a period's allowance comes with its paid invoice, an upgrade counts once
its invoice is paid, top-ups survive a plan change, and each month of a comp has its allowance.
Events are signed, shaped like the pinned API version, and go through the real webhook."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.workspaces import workspace_personal
from billing.models import QuotaPeriod
from billing.selectors import entitlements_for, quota_snapshot
from billing.services.ledger import quota_period_open, quota_reserve, quota_top_up
from billing.services.subscriptions import plan_comp
from core.errors import QuotaExceeded
from tests.billing import stripe_fakes as fake

pytestmark = pytest.mark.django_db
DAY = 86400


def _deliver(client, event_type: str, obj: dict, created: int) -> None:
    response = fake.deliver(client, fake.event(event_type, obj, created=created))
    assert response.status_code == 200, response.content


def _remaining(user) -> int:
    return quota_snapshot(workspace_personal(user), entitlements=entitlements_for(workspace_personal(user))).remaining


@pytest.fixture
def periods():
    now = int(time.time())
    return {"first": (now - 40 * DAY, now - 10 * DAY), "second": (now - 10 * DAY, now + 20 * DAY), "now": now}


@pytest.fixture
def paid_first_period(client, customer, periods):
    """A Pro customer whose first period was paid and who used 90,000 of its 100,000 tokens."""
    start, end = periods["first"]
    created = periods["now"] - 40 * DAY
    sub = fake.subscription(current_period_start=start, current_period_end=end)
    _deliver(client, "customer.subscription.created", sub, created)
    _deliver(client, "invoice.paid", fake.invoice(period_start=start, period_end=end), created + 1)
    QuotaPeriod.objects.filter(workspace__personal_of=customer).update(used=90_000)
    return customer


def test_a_renewal_not_yet_paid_keeps_the_last_paid_periods_remaining_tokens(client, paid_first_period, periods):
    customer = paid_first_period
    start, end = periods["second"]
    renewed = fake.subscription(current_period_start=start, current_period_end=end)
    _deliver(client, "customer.subscription.updated", renewed, periods["now"] - 60)

    assert entitlements_for(workspace_personal(customer)).plan.slug == "pro"
    assert _remaining(customer) == 10_000
    client.force_login(customer)
    page = client.get("/billing/").content.decode()
    assert "Your renewal is waiting for payment" in page
    assert ">100,000<" in page and ">90,000<" in page  # the last paid period's numbers
    with pytest.raises(QuotaExceeded):
        quota_reserve(
            period=quota_period_open(
                workspace=workspace_personal(customer), entitlements=entitlements_for(workspace_personal(customer))
            ),
            tokens=20_000,
            user=customer,
        )

    # The card fails: past_due keeps the plan through the grace period, still without new tokens.
    invoice = fake.invoice(period_start=start, period_end=end, status="open", billing_reason="subscription_cycle")
    _deliver(client, "invoice.payment_failed", invoice, periods["now"] - 50)
    past_due = fake.subscription(current_period_start=start, current_period_end=end, status="past_due")
    _deliver(client, "customer.subscription.updated", past_due, periods["now"] - 40)

    assert entitlements_for(workspace_personal(customer)).in_grace
    assert _remaining(customer) == 10_000

    # Paid at last: the new period opens with its full allowance.
    _deliver(client, "invoice.paid", fake.invoice(period_start=start, period_end=end), periods["now"] - 30)
    active = fake.subscription(current_period_start=start, current_period_end=end)
    _deliver(client, "customer.subscription.updated", active, periods["now"] - 20)

    assert _remaining(customer) == 100_000


def _upgrade_invoice(*, paid: bool, now: int, end: int) -> dict:
    invoice = fake.invoice(period_start=now, period_end=end, billing_reason="subscription_update")
    line = invoice["lines"]["data"][0]
    credit = {**line, "id": "il_credit", "amount": -1200}
    charge = {**line, "id": "il_charge", "amount": 6000}
    charge["pricing"] = {"type": "price_details", "price_details": {"price": "price_TestTeam001"}}
    invoice["lines"]["data"] = [credit, charge]
    invoice["amount_due"] = 4800
    if not paid:
        invoice.update(status="open", amount_paid=0, status_transitions={"finalized_at": now, "paid_at": None})
    else:
        invoice["status_transitions"] = {"finalized_at": now, "paid_at": now}
    return invoice


@pytest.fixture
def paid_pro(client, customer, periods):
    start, end = periods["second"]
    created = periods["now"] - 10 * DAY
    _deliver(
        client, "customer.subscription.created", fake.subscription(current_period_start=start, current_period_end=end),
        created,
    )  # fmt: skip
    _deliver(client, "invoice.paid", fake.invoice(period_start=start, period_end=end), created + 1)
    return customer


def test_an_upgrade_counts_only_once_its_invoice_is_paid(client, paid_pro, team_plan, periods):
    customer = paid_pro
    start, end = periods["second"]
    now = periods["now"]
    upgraded = fake.subscription(current_period_start=start, current_period_end=end, price="price_TestTeam001")
    _deliver(client, "customer.subscription.updated", upgraded, now - 30)

    assert entitlements_for(workspace_personal(customer)).plan.slug == "pro"
    assert _remaining(customer) == 100_000

    _deliver(client, "invoice.payment_failed", _upgrade_invoice(paid=False, now=now - 25, end=end), now - 25)

    assert (
        entitlements_for(workspace_personal(customer)).plan.slug == "pro"
    )  # a failed upgrade payment leaves the old plan
    assert _remaining(customer) == 100_000
    client.force_login(customer)
    assert "Your change to Team applies once its invoice is paid" in client.get("/billing/").content.decode()

    _deliver(client, "invoice.paid", _upgrade_invoice(paid=True, now=now - 20, end=end), now - 20)

    assert entitlements_for(workspace_personal(customer)).plan.slug == "team"
    assert _remaining(customer) == 900_000


def test_an_upgrade_keeps_the_periods_top_ups(client, paid_pro, team_plan, periods):
    customer = paid_pro
    start, end = periods["second"]
    now = periods["now"]
    quota_top_up(workspace=workspace_personal(customer), tokens=5_000, reason="support credit")
    assert _remaining(customer) == 105_000

    upgraded = fake.subscription(current_period_start=start, current_period_end=end, price="price_TestTeam001")
    _deliver(client, "customer.subscription.updated", upgraded, now - 30)
    _deliver(client, "invoice.paid", _upgrade_invoice(paid=True, now=now - 20, end=end), now - 20)

    assert _remaining(customer) == 905_000


def test_a_replayed_invoice_grants_no_more_than_its_plan_and_top_ups(client, paid_pro, periods):
    customer = paid_pro
    start, end = periods["second"]
    quota_top_up(workspace=workspace_personal(customer), tokens=5_000, reason="support credit")

    _deliver(client, "invoice.paid", fake.invoice(period_start=start, period_end=end), periods["now"])

    assert QuotaPeriod.objects.get(workspace__personal_of=customer).allowance == 105_000


def test_a_comp_grants_each_month_of_the_comp_its_allowance(customer, team_plan):
    comp = plan_comp(workspace=workspace_personal(customer), plan=team_plan, days=90)
    first = entitlements_for(workspace_personal(customer))
    quota_reserve(
        period=quota_period_open(workspace=workspace_personal(customer), entitlements=first),
        tokens=900_000,
        user=customer,
    )
    assert _remaining(customer) == 0

    later = comp.current_period_start + timedelta(days=40)
    second = entitlements_for(workspace_personal(customer), now=later)

    assert second.plan.slug == "team"
    assert second.period_start > first.period_start
    period = quota_period_open(workspace=workspace_personal(customer), entitlements=second)
    assert (period.allowance, period.used, period.reserved) == (900_000, 0, 0)
    last = entitlements_for(workspace_personal(customer), now=comp.current_period_start + timedelta(days=85))
    assert last.period_end == comp.current_period_end
    assert timezone.now() < last.period_start
