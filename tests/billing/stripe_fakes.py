"""Stripe at its boundary: signed webhook deliveries shaped like API 2026-10-28.endive (from the
JSON fixtures beside this file) and an HTTP client that records what the stripe library sends."""

from __future__ import annotations

import copy
import json
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qsl, urlparse

import stripe
from django.conf import settings

from billing.stripe_client import event_payload, sign

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PERIOD_START = 1764000000
PERIOD_END = 1766592000


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def subscription(**changes) -> dict:
    obj = fixture("subscription")
    item = obj["items"]["data"][0]
    for key in ("current_period_start", "current_period_end"):
        if key in changes:
            item[key] = changes.pop(key)
    if "price" in changes:
        item["price"]["id"] = item["plan"]["id"] = changes.pop("price")
    obj.update(changes)
    return obj


def invoice(*, period_start: int = PERIOD_START, period_end: int = PERIOD_END, **changes) -> dict:
    obj = fixture("invoice")
    obj["lines"]["data"][0]["period"] = {"start": period_start, "end": period_end}
    obj.update(changes)
    return obj


def event(event_type: str, obj: dict, *, created: int | None = None, event_id: str | None = None) -> str:
    return event_payload(
        event_id=event_id or f"evt_{uuid.uuid4().hex[:24]}",
        event_type=event_type,
        obj=copy.deepcopy(obj),
        created=created,
    )


def deliver(client, payload: str, *, signature: str | None = None):
    """POST one event to the webhook endpoint, signed with the configured secret unless told."""
    return client.post(
        "/billing/webhook/",
        data=payload,
        content_type="application/json",
        headers={"Stripe-Signature": signature if signature is not None else sign(payload)},
    )


class RecordingStripe(stripe.HTTPClient):
    """Answers the stripe library's requests from canned responses and records each request."""

    name = "recording"

    def __init__(self, responses: dict[tuple[str, str], dict]):
        super().__init__()
        self.responses = responses
        self.requests: list[dict] = []

    def request(self, method, url, headers, post_data=None):
        parsed = urlparse(url)
        body = dict(parse_qsl(post_data.decode() if isinstance(post_data, bytes) else post_data or ""))
        self.requests.append(
            {
                "method": method.upper(),
                "path": parsed.path,
                "query": parsed.query,
                "headers": dict(headers),
                "data": body,
            }
        )
        for (want_method, prefix), response in self.responses.items():
            if method.upper() == want_method and parsed.path.startswith(prefix):
                return json.dumps(response), 200, {}
        return json.dumps({"error": {"message": f"no fake for {method} {parsed.path}"}}), 404, {}

    def request_stream(self, method, url, headers, post_data=None):
        raise NotImplementedError

    def close(self):
        pass


def portal_configurations(proration_behavior: str) -> dict:
    """GET /v1/billing_portal/configurations answering with one default configuration."""
    configuration = {
        "id": "bpc_Default00001",
        "object": "billing_portal.configuration",
        "active": True,
        "is_default": True,
        "features": {
            "subscription_update": {
                "enabled": True,
                "default_allowed_updates": ["price"],
                "proration_behavior": proration_behavior,
            },
            "subscription_cancel": {"enabled": True, "mode": "at_period_end"},
        },
    }
    return {"object": "list", "data": [configuration], "has_more": False}


def stale_signature(payload: str) -> str:
    return sign(payload, timestamp=int(time.time()) - settings.WEBHOOK_TOLERANCE_SECONDS - 60)
