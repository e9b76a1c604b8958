"""The billing sandbox: Stripe's part, played locally when no Stripe key is configured (local and
test profiles only; production refuses to start without a key).

Its checkout and portal pages produce the events Stripe would send, shaped like the pinned API
version and signed with the webhook secret, and deliver them to the same webhook endpoint (through a
Celery task, asynchronously, as Stripe does). From the webhook on, nothing knows it is a sandbox.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from dateutil.relativedelta import relativedelta
from django.core import signing
from django.urls import reverse

SALT = "inkwell.billing.sandbox"
MAX_AGE = 24 * 3600


def customer_id(workspace) -> str:
    return f"cus_sandbox_{workspace.pk}_{uuid.uuid4().hex[:8]}"


def price_id(plan) -> str:
    return f"price_sandbox_{plan.slug}_{plan.price_cents}{plan.currency}"


def checkout_url(*, workspace, plan, customer_id: str, success_url: str, cancel_url: str, seats: int = 1) -> str:
    token = signing.dumps(
        {
            "workspace": workspace.pk,
            "plan": plan.pk,
            "seats": seats,
            "customer": customer_id,
            "success": success_url,
            "cancel": cancel_url,
        },
        salt=SALT,
    )
    return reverse("billing:sandbox-checkout", args=[token])


def portal_url(*, workspace, return_url: str) -> str:
    token = signing.dumps({"workspace": workspace.pk, "return": return_url}, salt=SALT)
    return reverse("billing:sandbox-portal", args=[token])


def read_token(token: str) -> dict:
    """Raises signing.BadSignature (or SignatureExpired) for a forged or old link."""
    return signing.loads(token, salt=SALT, max_age=MAX_AGE)


def _ts(moment: datetime) -> int:
    return int(moment.timestamp())


def subscription_object(
    *,
    subscription_id: str,
    customer: str,
    price: str,
    workspace_id: int,
    status: str,
    period_start: datetime,
    period_end: datetime,
    cancel_at_period_end: bool = False,
    ended_at: datetime | None = None,
    quantity: int = 1,
) -> dict:
    """A subscription as API 2026-10-28 shapes it: the billing period is on the item."""
    return {
        "id": subscription_id,
        "object": "subscription",
        "customer": customer,
        "status": status,
        "cancel_at_period_end": cancel_at_period_end,
        "canceled_at": _ts(ended_at) if ended_at else None,
        "ended_at": _ts(ended_at) if ended_at else None,
        "created": _ts(period_start),
        "livemode": False,
        "metadata": {"workspace_id": str(workspace_id)},
        "items": {
            "object": "list",
            "data": [
                {
                    "id": f"si_{subscription_id[4:]}",
                    "object": "subscription_item",
                    "price": {"id": price, "object": "price", "recurring": {"interval": "month"}},
                    "quantity": quantity,
                    "current_period_start": _ts(period_start),
                    "current_period_end": _ts(period_end),
                }
            ],
        },
    }


def invoice_object(
    *, subscription: dict, status: str, amount: int, billing_reason: str = "subscription_cycle", lines=None
) -> dict:
    item = subscription["items"]["data"][0]
    lines = lines or [
        {
            "object": "line_item",
            "amount": amount,
            "quantity": item["quantity"],
            "period": {"start": item["current_period_start"], "end": item["current_period_end"]},
            "pricing": {"price_details": {"price": item["price"]["id"]}},
        }
    ]
    now = int(time.time())
    return {
        "id": f"in_sandbox_{uuid.uuid4().hex[:16]}",
        "object": "invoice",
        "customer": subscription["customer"],
        "status": status,
        "amount_due": amount,
        "amount_paid": amount if status == "paid" else 0,
        "billing_reason": billing_reason,
        "status_transitions": {"finalized_at": now, "paid_at": now if status == "paid" else None},
        "parent": {
            "type": "subscription_details",
            "subscription_details": {"subscription": subscription["id"], "metadata": subscription["metadata"]},
        },
        "lines": {"object": "list", "data": lines},
    }


def proration_invoice(
    *, subscription: dict, old_price: str, old_cents: int, new_cents: int, now: datetime, old_quantity: int = 1
) -> dict:
    """The invoice a plan or seat change makes at once (the Portal set to ``always_invoice``):
    credit for the old plan's (or seat count's) unused time, a charge for the new one's rest of the
    period. ``old_cents`` and ``new_cents`` are unit prices; the lines carry their quantities."""
    item = subscription["items"]["data"][0]
    start, end = item["current_period_start"], item["current_period_end"]
    left = max(0.0, min(1.0, (end - _ts(now)) / max(1, end - start)))
    credit = -round(old_cents * old_quantity * left)
    charge = round(new_cents * item["quantity"] * left)
    period = {"start": _ts(now), "end": end}
    lines = [
        {"object": "line_item", "amount": credit, "quantity": old_quantity, "period": period,
         "pricing": {"price_details": {"price": old_price}}},
        {"object": "line_item", "amount": charge, "quantity": item["quantity"], "period": period,
         "pricing": {"price_details": {"price": item["price"]["id"]}}},
    ]  # fmt: skip
    return invoice_object(
        subscription=subscription,
        status="paid",
        amount=max(0, credit + charge),
        billing_reason="subscription_update",
        lines=lines,
    )


def _event(event_type: str, obj: dict) -> dict:
    return {"id": f"evt_sandbox_{uuid.uuid4().hex}", "type": event_type, "object": obj, "created": int(time.time())}


def checkout_paid_events(*, data: dict, plan, now: datetime | None = None) -> list[dict]:
    """What Stripe sends once a subscription Checkout is paid."""
    now = now or datetime.now(tz=UTC)
    subscription = subscription_object(
        subscription_id=f"sub_sandbox_{uuid.uuid4().hex[:16]}",
        customer=data["customer"],
        price=plan.stripe_price_id,
        workspace_id=data["workspace"],
        status="active",
        period_start=now,
        period_end=now + relativedelta(months=1),
        quantity=data.get("seats", 1),
    )
    session = {
        "id": f"cs_sandbox_{uuid.uuid4().hex[:16]}",
        "object": "checkout.session",
        "mode": "subscription",
        "status": "complete",
        "payment_status": "paid",
        "customer": data["customer"],
        "client_reference_id": str(data["workspace"]),
        "subscription": subscription["id"],
        "metadata": {"workspace_id": str(data["workspace"]), "plan": plan.slug},
    }
    return [
        _event("customer.subscription.created", subscription),
        _event(
            "invoice.paid",
            invoice_object(
                subscription=subscription,
                status="paid",
                amount=plan.price_cents * data.get("seats", 1),
                billing_reason="subscription_create",
            ),
        ),
        _event("checkout.session.completed", session),
    ]


def portal_events(*, action: str, subscription, plans: dict, now: datetime | None = None) -> list[dict]:
    """What Stripe sends after a change in the Customer Portal (or at a renewal) to ``subscription``
    (the local mirror, which here stands for Stripe's record)."""
    now = now or datetime.now(tz=UTC)
    fields = {
        "subscription_id": subscription.stripe_subscription_id,
        "customer": subscription.stripe_customer_id,
        "price": subscription.stripe_price_id,
        "workspace_id": subscription.workspace_id,
        "status": subscription.status,
        "period_start": subscription.current_period_start,
        "period_end": subscription.current_period_end,
        "cancel_at_period_end": subscription.cancel_at_period_end,
        "quantity": subscription.seats,
    }
    amount = subscription.plan.price_cents * subscription.seats
    if action.startswith("switch:"):
        plan = plans[action.split(":", 1)[1]]
        fields.update(price=plan.stripe_price_id, cancel_at_period_end=False)
        switched = subscription_object(**fields)
        invoice = proration_invoice(
            subscription=switched,
            old_price=subscription.stripe_price_id,
            old_cents=subscription.plan.price_cents,
            new_cents=plan.price_cents,
            now=now,
            old_quantity=subscription.seats,
        )
        return [_event("customer.subscription.updated", switched), _event("invoice.paid", invoice)]
    if action.startswith("seats:"):
        fields["quantity"] = int(action.split(":", 1)[1])
        if not 1 <= fields["quantity"] <= 1000:
            raise ValueError("seats out of range")
        changed = subscription_object(**fields)
        invoice = proration_invoice(
            subscription=changed,
            old_price=subscription.stripe_price_id,
            old_cents=subscription.plan.price_cents,
            new_cents=subscription.plan.price_cents,
            now=now,
            old_quantity=subscription.seats,
        )
        return [_event("customer.subscription.updated", changed), _event("invoice.paid", invoice)]
    if action in ("cancel_at_period_end", "resume"):
        fields["cancel_at_period_end"] = action == "cancel_at_period_end"
        return [_event("customer.subscription.updated", subscription_object(**fields))]
    if action == "cancel_now":
        fields.update(status="canceled", ended_at=now)
        return [_event("customer.subscription.deleted", subscription_object(**fields))]
    if action == "renew":
        if subscription.cancel_at_period_end:
            fields.update(status="canceled", ended_at=now)
            return [_event("customer.subscription.deleted", subscription_object(**fields))]
        fields.update(
            status="active",
            period_start=subscription.current_period_end,
            period_end=subscription.current_period_end + relativedelta(months=1),
        )
        renewed = subscription_object(**fields)
        return [
            _event("customer.subscription.updated", renewed),
            _event("invoice.paid", invoice_object(subscription=renewed, status="paid", amount=amount)),
        ]
    if action == "fail_payment":
        fields["status"] = "past_due"
        failed = subscription_object(**fields)
        return [
            _event("invoice.payment_failed", invoice_object(subscription=failed, status="open", amount=amount)),
            _event("customer.subscription.updated", failed),
        ]
    raise ValueError(f"unknown sandbox action {action!r}")


PORTAL_ACTIONS = {
    "cancel_at_period_end": "Cancel at the end of the period",
    "resume": "Keep the subscription (undo the cancellation)",
    "cancel_now": "Cancel now",
    "renew": "Simulate the renewal payment succeeding",
    "fail_payment": "Simulate the renewal payment failing",
}
