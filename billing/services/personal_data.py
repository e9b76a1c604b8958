"""Stored Stripe events keep ids, types, amounts and statuses for the books; the personal data in
them (names, emails, addresses) is erased after BILLING_EVENT_RETENTION_DAYS, or at once when the
customer's account is deleted."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from billing.models import BillingCustomer, WebhookEvent

# Fields of Stripe objects that carry a person's data (name, email, address, phone, card holder).
PERSONAL_FIELDS = frozenset(
    {
        "customer_email", "customer_name", "customer_address", "customer_phone", "customer_shipping",
        "customer_tax_ids", "email", "name", "phone", "address", "shipping", "billing_details",
        "receipt_email", "customer_details", "shipping_details", "account_name",
    }
)  # fmt: skip


def personal_data_scrubbed(value):
    """A copy of a Stripe payload with every personal field emptied, at any depth."""
    if isinstance(value, dict):
        return {k: (None if k in PERSONAL_FIELDS else personal_data_scrubbed(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [personal_data_scrubbed(v) for v in value]
    return value


def webhook_payloads_scrub(*, customer_id: str | None = None, older_than: datetime | None = None) -> int:
    """Erase personal data from stored webhook payloads: one customer's (account deletion) or
    those received before ``older_than`` (BILLING_EVENT_RETENTION_DAYS). Ids, types, amounts and
    statuses stay for the books. Returns how many events were scrubbed."""
    events = WebhookEvent.objects.filter(personal_data_erased_at__isnull=True)
    if customer_id is not None:
        events = events.filter(payload__icontains=customer_id)
    if older_than is not None:
        events = events.filter(received_at__lt=older_than)
    scrubbed = 0
    for event in events.iterator():
        WebhookEvent.objects.filter(pk=event.pk).update(
            payload=personal_data_scrubbed(event.payload), personal_data_erased_at=timezone.now()
        )
        scrubbed += 1
    return scrubbed


def billing_personal_data_erase(*, workspace) -> int:
    """Erase the personal data in stored Stripe events of ``workspace``'s customer (account deletion)."""
    customer = BillingCustomer.objects.filter(workspace=workspace).first()
    if customer is None:
        return 0
    return webhook_payloads_scrub(customer_id=customer.stripe_customer_id)


def webhook_payloads_scrub_expired() -> int:
    cutoff = timezone.now() - timedelta(days=settings.BILLING_EVENT_RETENTION_DAYS)
    return webhook_payloads_scrub(older_than=cutoff)
