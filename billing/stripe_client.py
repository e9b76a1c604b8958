"""The one door to Stripe: a configured StripeClient, webhook verification, and reading the fields
of Stripe objects as the pinned API version shapes them."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from typing import Any

import stripe
from django.conf import settings

# Tests replace this with a recording HTTP client: the boundary where Stripe's servers begin.
http_client: stripe.HTTPClient | None = None


def client() -> stripe.StripeClient:
    options: dict[str, Any] = {
        "stripe_version": settings.STRIPE_API_VERSION,
        "max_network_retries": 2,
    }
    if settings.STRIPE_API_BASE:
        options["base_addresses"] = {"api": settings.STRIPE_API_BASE}
    if http_client is not None:
        options["http_client"] = http_client
    return stripe.StripeClient(settings.STRIPE_SECRET_KEY, **options)


def verify_signature(payload: bytes, signature: str) -> None:
    """Verify the signature and the timestamp (stale events are refused); raise
    SignatureVerificationError on any doubt. The body is read afterwards, by the caller: a signed
    body may still not be an event."""
    stripe.WebhookSignature.verify_header(
        payload.decode("utf-8", errors="replace"),
        signature,
        settings.STRIPE_WEBHOOK_SECRET,
        tolerance=settings.WEBHOOK_TOLERANCE_SECONDS,
    )


def sign(payload: str, *, secret: str | None = None, timestamp: int | None = None) -> str:
    """A Stripe-Signature header for ``payload``, computed the way Stripe computes it."""
    secret = secret or settings.STRIPE_WEBHOOK_SECRET
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def event_payload(*, event_id: str, event_type: str, obj: dict, created: int | None = None) -> str:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "api_version": settings.STRIPE_API_VERSION,
            "created": int(time.time()) if created is None else created,
            "type": event_type,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "data": {"object": obj},
        }
    )


def as_datetime(timestamp: int | None) -> datetime | None:
    return datetime.fromtimestamp(timestamp, tz=UTC) if timestamp else None


def object_id(value) -> str | None:
    """An expandable field: the id whether Stripe sent the id or the object."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return value.get("id")


def subscription_price_id(subscription: dict) -> str | None:
    items = (subscription.get("items") or {}).get("data") or []
    if not items:
        return None
    item = items[0]
    return object_id(item.get("price")) or object_id(item.get("plan"))


def subscription_quantity(subscription: dict) -> int:
    """Seats: the quantity of the subscription's item (1 when Stripe leaves it out)."""
    items = (subscription.get("items") or {}).get("data") or []
    quantity = items[0].get("quantity") if items else None
    return max(1, int(quantity or 1))


def subscription_product_id(subscription: dict) -> str | None:
    items = (subscription.get("items") or {}).get("data") or []
    if not items:
        return None
    price = items[0].get("price") or items[0].get("plan") or {}
    return object_id(price.get("product")) if isinstance(price, dict) else None


def subscription_period(subscription: dict) -> tuple[datetime | None, datetime | None]:
    """Since API 2025-03-31 the billing period lives on the subscription items; older versions
    (and localstripe) keep it on the subscription itself."""
    items = (subscription.get("items") or {}).get("data") or []
    source = items[0] if items and items[0].get("current_period_start") else subscription
    return as_datetime(source.get("current_period_start")), as_datetime(source.get("current_period_end"))


def invoice_subscription_id(invoice: dict) -> str | None:
    """Since API 2025-03-31 an invoice names its subscription under parent.subscription_details."""
    details = ((invoice.get("parent") or {}).get("subscription_details")) or {}
    return object_id(details.get("subscription")) or object_id(invoice.get("subscription"))


def invoice_period(invoice: dict) -> tuple[datetime | None, datetime | None]:
    lines = (invoice.get("lines") or {}).get("data") or []
    if lines and lines[0].get("period"):
        period = lines[0]["period"]
        return as_datetime(period.get("start")), as_datetime(period.get("end"))
    return as_datetime(invoice.get("period_start")), as_datetime(invoice.get("period_end"))


def invoice_lines(invoice: dict) -> list[dict]:
    """Each line as ``{amount, price, quantity, start, end}``. Since API 2025-03-31 a line names its price
    under pricing.price_details; older versions (and localstripe) under price."""
    lines = []
    for line in (invoice.get("lines") or {}).get("data") or []:
        details = (line.get("pricing") or {}).get("price_details") or {}
        price = object_id(details.get("price")) or object_id(line.get("price"))
        period = line.get("period") or {}
        lines.append(
            {
                "amount": int(line.get("amount") or 0),
                "price": price,
                "quantity": int(line.get("quantity") or 1),
                "start": as_datetime(period.get("start")),
                "end": as_datetime(period.get("end")),
            }
        )
    return lines


def invoice_paid_at(invoice: dict) -> datetime | None:
    return as_datetime((invoice.get("status_transitions") or {}).get("paid_at"))
