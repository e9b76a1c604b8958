from __future__ import annotations

import urllib.request

from celery import shared_task

from billing import stripe_client


@shared_task(name="billing.sandbox_deliver", bind=True, max_retries=8, ignore_result=True)
def sandbox_deliver(self, url: str, events: list[dict]) -> None:
    """Deliver sandbox events to the webhook endpoint in order, signed at sending time, retrying
    what is not accepted with a growing delay (as Stripe does)."""
    for index, event in enumerate(events):
        payload = stripe_client.event_payload(
            event_id=event["id"], event_type=event["type"], obj=event["object"], created=event["created"]
        )
        request = urllib.request.Request(  # noqa: S310 - the app's own webhook URL
            url,
            data=payload.encode(),
            headers={"Content-Type": "application/json", "Stripe-Signature": stripe_client.sign(payload)},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30):  # noqa: S310
                pass
        except Exception as exc:
            raise self.retry(exc=exc, countdown=min(2**self.request.retries, 30), args=[url, events[index:]]) from exc
