"""Stripe's events: verify a delivery, apply it exactly once (one handler per event type), replay
a failed one; and the reconcile that repairs what lost events left behind. Local subscription
state is recomputed from Stripe's object each time, never added to, so duplicate, late and
out-of-order events converge."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import Workspace
from billing import stripe_client
from billing.gateway import billing_gateway
from billing.models import (
    BillingCustomer,
    Plan,
    QuotaPeriod,
    Subscription,
    SubscriptionStatus,
    WebhookEvent,
    WebhookStatus,
)
from billing.services.ledger import quota_period_grant
from core.audit import audit_record
from core.errors import ApplicationError
from core.models import AuditAction

logger = logging.getLogger(__name__)


class NotOurs(Exception):
    """The event is about a customer Inkwell does not know (for instance a deleted account):
    acknowledge it and change nothing, so Stripe stops retrying."""


class RetryLater(Exception):
    """The event cannot be applied yet (say, an invoice for a subscription not seen yet): answer
    5xx so that Stripe delivers it again later."""


# --- a subscription's state, recomputed from Stripe's object -----------------------------------


def _workspace_for(customer_id: str | None, metadata: dict | None):
    """The workspace a Stripe object belongs to: its customer's, else the ``workspace_id`` our
    Checkout put in the metadata (or, for objects made before workspaces, the ``user_id``: that
    user's personal workspace)."""
    customer = BillingCustomer.objects.select_related("workspace").filter(stripe_customer_id=customer_id).first()
    if customer is not None:
        return customer.workspace
    metadata = metadata or {}
    if str(metadata.get("workspace_id") or "").isdigit():
        return Workspace.objects.filter(pk=metadata["workspace_id"]).first()
    if str(metadata.get("user_id") or "").isdigit():
        return Workspace.objects.filter(personal_of_id=metadata["user_id"]).first()
    return None


def subscription_sync(*, stripe_subscription: dict, as_of: datetime, dry_run: bool = False) -> Subscription:
    """Recompute the local subscription from Stripe's object. ``as_of`` is when Stripe produced that
    state (the event's time): an older state than the one stored changes nothing, and a canceled
    subscription stays canceled, so late and out-of-order events converge."""
    obj = stripe_subscription
    workspace = _workspace_for(stripe_client.object_id(obj.get("customer")), obj.get("metadata"))
    if workspace is None:
        raise NotOurs(f"subscription {obj['id']} belongs to no Inkwell customer")
    price_id = stripe_client.subscription_price_id(obj)
    # A plan whose price changed keeps selling under a new Price; subscribers on the archived one
    # are found through the plan's Product (or the plan slug that Checkout put in the metadata).
    plan = (
        Plan.objects.filter(stripe_price_id=price_id).first()
        or Plan.objects.filter(stripe_product_id=stripe_client.subscription_product_id(obj) or "-").first()
        or Plan.objects.filter(slug=(obj.get("metadata") or {}).get("plan") or "-", stripe_price_id__gt="").first()
    )
    if plan is None:
        raise ApplicationError(
            f"Subscription {obj['id']} has price {price_id}, which no plan sells.", code="unknown_price"
        )
    period_start, period_end = stripe_client.subscription_period(obj)
    status = obj["status"]
    # One customer's subscription events take turns, so two new subscriptions see each other.
    Workspace.objects.select_for_update().filter(pk=workspace.pk).first()
    local = Subscription.objects.select_for_update().filter(stripe_subscription_id=obj["id"]).first()
    if local is not None:
        if local.stripe_synced_at and as_of < local.stripe_synced_at:
            return local
        if local.status == SubscriptionStatus.CANCELED and status != SubscriptionStatus.CANCELED:
            return local
        # Events are stamped to the second: of two from the same second, an "incomplete" state
        # (the subscription as first created) never overrides one that is already paid for.
        tied = local.stripe_synced_at is not None and as_of == local.stripe_synced_at
        if tied and status == SubscriptionStatus.INCOMPLETE and local.status in SubscriptionStatus.ENTITLED_OR_GRACE:
            return local
    before = (local.plan_id, local.status, local.seats) if local is not None else None
    local = local or Subscription(stripe_subscription_id=obj["id"])
    local.workspace = workspace
    local.plan = plan
    local.status = status
    local.seats = stripe_client.subscription_quantity(obj)
    local.current_period_start = period_start
    local.current_period_end = period_end
    local.cancel_at_period_end = bool(obj.get("cancel_at_period_end"))
    local.stripe_customer_id = stripe_client.object_id(obj.get("customer")) or ""
    local.stripe_price_id = price_id or ""
    local.stripe_synced_at = as_of
    local.canceled_at = stripe_client.as_datetime(obj.get("ended_at") or obj.get("canceled_at"))
    if status == SubscriptionStatus.PAST_DUE:
        local.past_due_since = local.past_due_since or as_of
    else:
        local.past_due_since = None
    local.save()
    if status in SubscriptionStatus.LIVE and _older_live_subscription(local) is not None:
        local = _duplicate_cancel(local=local, stripe_subscription=obj, call_stripe=not dry_run)
        status = local.status
    if before != (plan.pk, status, local.seats):
        audit_record(
            action=AuditAction.PLAN_CHANGED,
            user=workspace.personal_of,
            workspace=workspace,
            plan=plan.slug,
            status=status,
            seats=local.seats,
            subscription=obj["id"],
        )
    # No tokens here: a subscription's state says nothing of payment (a renewal is "active" an hour
    # before its card is tried). The allowance comes with invoice.paid.
    return local


def _older_live_subscription(local: Subscription) -> Subscription | None:
    return (
        Subscription.objects.filter(
            workspace=local.workspace,
            is_comp=False,
            status__in=SubscriptionStatus.LIVE,
            created_at__lt=local.created_at,
        )
        .exclude(pk=local.pk)
        .first()
    )


def _duplicate_cancel(*, local: Subscription, stripe_subscription: dict, call_stripe: bool = True) -> Subscription:
    """A second live subscription of one customer (two tabs, a retried Checkout): cancel the newer
    one at once, refund its unused time, and tell staff through the audit log."""

    kept = _older_live_subscription(local)
    refunded = (
        billing_gateway().subscription_cancel_with_refund(stripe_subscription=stripe_subscription) if call_stripe else 0
    )
    Subscription.objects.filter(pk=local.pk).update(status=SubscriptionStatus.CANCELED, canceled_at=timezone.now())
    local.refresh_from_db()
    audit_record(
        action=AuditAction.DUPLICATE_SUBSCRIPTION,
        user=local.workspace.personal_of,
        workspace=local.workspace,
        subscription=local.stripe_subscription_id,
        kept=kept.stripe_subscription_id if kept else "",
        refunded_cents=refunded,
    )
    logger.warning(
        "cancelled duplicate subscription %s of workspace %s", local.stripe_subscription_id, local.workspace_id
    )
    return local


# --- one handler per event type -------------------------------------------------------------------


def _on_checkout_completed(session: dict, as_of: datetime) -> None:
    customer_id = stripe_client.object_id(session.get("customer"))
    workspace = _workspace_for(customer_id, session.get("metadata"))
    if workspace is not None and customer_id:
        BillingCustomer.objects.get_or_create(workspace=workspace, defaults={"stripe_customer_id": customer_id})


def _on_subscription(subscription: dict, as_of: datetime) -> None:
    subscription_sync(stripe_subscription=subscription, as_of=as_of)


def _local_subscription_for(invoice: dict) -> Subscription | None:
    subscription_id = stripe_client.invoice_subscription_id(invoice)
    if subscription_id is None:
        return None  # not a subscription invoice
    local = Subscription.objects.select_for_update().filter(stripe_subscription_id=subscription_id).first()
    if local is None and _workspace_for(stripe_client.object_id(invoice.get("customer")), None) is None:
        raise NotOurs(f"invoice {invoice.get('id')} is for a customer Inkwell does not know")
    if local is None:
        raise RetryLater(f"invoice {invoice.get('id')} names subscription {subscription_id}, not seen yet")
    return local


def _invoice_plan(invoice: dict, fallback: Plan, fallback_seats: int) -> tuple[Plan, int]:
    """The plan and seats an invoice pays for: the price and quantity of its largest line (a
    proration invoice credits the old plan's or seat count's unused time and charges the new one's
    rest; the charge is the larger line)."""
    priced = [line for line in stripe_client.invoice_lines(invoice) if line["price"]]
    for line in sorted(priced, key=lambda line: line["amount"], reverse=True):
        plan = Plan.objects.filter(stripe_price_id=line["price"]).first()
        if plan is not None:
            return plan, max(1, line.get("quantity") or 1)
    return fallback, fallback_seats


def _on_invoice_paid(invoice: dict, as_of: datetime) -> None:
    """Tokens follow payment: a paid invoice grants the period it pays for its plan's allowance.
    A renewal (subscription_cycle) opens the new period; an upgrade's proration invoice
    (subscription_update) raises the current period to the new plan."""
    local = _local_subscription_for(invoice)
    if local is None:
        return
    plan, seats = _invoice_plan(invoice, fallback=local.plan, fallback_seats=local.seats)
    workspace = local.workspace
    paid_at = stripe_client.invoice_paid_at(invoice) or as_of
    if invoice.get("billing_reason") == "subscription_update":
        # Lines of a mid-period change start at the change; the ledger period is the subscription's.
        current = (
            QuotaPeriod.objects.filter(workspace=workspace, period_start__lte=paid_at, period_end__gt=paid_at)
            .order_by("-period_start")
            .first()
        )
        period_start = current.period_start if current else local.current_period_start
        period_end = current.period_end if current else local.current_period_end
    else:
        period_start, period_end = stripe_client.invoice_period(invoice)
    newest = local.paid_period_start is None or (period_start, paid_at) >= (
        local.paid_period_start,
        local.paid_at or paid_at,
    )
    if not newest:
        # A late copy of an older invoice: its period keeps what it was granted.
        if not QuotaPeriod.objects.filter(workspace=workspace, period_start=period_start).exists():
            quota_period_grant(
                workspace=workspace, period_start=period_start, period_end=period_end, plan=plan, seats=seats
            )
        return
    quota_period_grant(workspace=workspace, period_start=period_start, period_end=period_end, plan=plan, seats=seats)
    Subscription.objects.filter(pk=local.pk).update(
        payment_failed_at=None, paid_plan=plan, paid_period_start=period_start, paid_at=paid_at, paid_seats=seats
    )


def _on_invoice_payment_failed(invoice: dict, as_of: datetime) -> None:
    local = _local_subscription_for(invoice)
    if local is not None and local.payment_failed_at is None:
        Subscription.objects.filter(pk=local.pk).update(payment_failed_at=as_of)


WEBHOOK_HANDLERS = {
    "checkout.session.completed": _on_checkout_completed,
    "customer.subscription.created": _on_subscription,
    "customer.subscription.updated": _on_subscription,
    "customer.subscription.deleted": _on_subscription,
    "invoice.paid": _on_invoice_paid,
    "invoice.payment_failed": _on_invoice_payment_failed,
}


# --- deliveries: apply once, replay, receive --------------------------------------------------------


def webhook_event_apply(*, event: dict) -> WebhookEvent:
    """Apply one verified event exactly once. The event's row and every change it causes commit
    together; a duplicate (even one arriving at the same moment) finds the row and does nothing.
    On failure everything rolls back, the failure is recorded, and the error propagates (5xx)."""
    created_at = stripe_client.as_datetime(event["created"])
    try:
        with transaction.atomic():
            record, created = _webhook_event_row(event=event, created_at=created_at)
            if not created and record.status != WebhookStatus.FAILED:
                return record
            handler = WEBHOOK_HANDLERS.get(event["type"])
            ours = handler is not None
            if ours:
                try:
                    with transaction.atomic():
                        handler(event["data"]["object"], created_at)
                except NotOurs as verdict:
                    ours = False
                    record.error = str(verdict)
            record.status = WebhookStatus.PROCESSED if ours else WebhookStatus.IGNORED
            if ours:
                record.error = ""
            record.processed_at = timezone.now()
            if not created:
                record.attempts += 1
            record.save()
            return record
    except Exception as exc:
        _webhook_failure_record(event=event, created_at=created_at, error=f"{exc.__class__.__name__}: {exc}")
        raise


def _webhook_event_row(*, event: dict, created_at: datetime, error: str = "") -> tuple[WebhookEvent, bool]:
    """The event's row, locked; a new one starts as failed until its handler has succeeded."""
    return WebhookEvent.objects.select_for_update().get_or_create(
        stripe_event_id=event["id"],
        defaults={
            "type": event["type"],
            "stripe_created_at": created_at,
            "payload": event,
            "status": WebhookStatus.FAILED,
            "error": error,
        },
    )


def _webhook_failure_record(*, event: dict, created_at: datetime, error: str) -> None:
    with transaction.atomic():
        record, created = _webhook_event_row(event=event, created_at=created_at, error=error)
        if not created and record.status == WebhookStatus.FAILED:
            WebhookEvent.objects.filter(pk=record.pk).update(error=error, attempts=F("attempts") + 1)

        audit_record(action=AuditAction.WEBHOOK_FAILED, event=event["id"], type=event["type"], error=error[:500])


def webhook_event_replay(*, event: WebhookEvent, actor=None) -> WebhookEvent:
    """Apply a stored, failed event again (from the admin): once, like any delivery."""

    record = webhook_event_apply(event=event.payload)
    audit_record(action=AuditAction.WEBHOOK_REPLAYED, actor=actor, event=event.stripe_event_id, status=record.status)
    return record


class MalformedEvent(ValueError):
    """A correctly signed body that is not an event Inkwell can read: answered 400 (a retry would
    bring the same body) and recorded for staff."""


def _event_problem(event) -> str | None:
    if not isinstance(event, dict):
        return f"the body is JSON but not an object ({type(event).__name__})"
    for key, kind in (("id", str), ("type", str), ("created", int)):
        if not isinstance(event.get(key), kind) or isinstance(event.get(key), bool) or event.get(key) == "":
            return f"the event has no valid {key!r}"
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        return "the event has no data.object"
    return None


def _malformed_event_record(*, payload: bytes, problem: str) -> None:
    digest = hashlib.sha256(payload).hexdigest()[:40]
    WebhookEvent.objects.get_or_create(
        stripe_event_id=f"malformed_{digest}",
        defaults={
            "type": "malformed",
            "stripe_created_at": timezone.now(),
            "payload": {"body": payload[:10_000].decode("utf-8", errors="replace")},
            "status": WebhookStatus.FAILED,
            "error": problem,
        },
    )


def webhook_receive(*, payload: bytes, signature: str) -> WebhookEvent:
    """Verify and apply one delivery. Raises stripe's SignatureVerificationError or ValueError for a
    bad, missing or stale signature (nothing is written), MalformedEvent for a signed body that is
    not an event (recorded as a failed event for staff)."""
    stripe_client.verify_signature(payload, signature)
    event = json.loads(payload)
    problem = _event_problem(event)
    if problem is not None:
        _malformed_event_record(payload=payload, problem=problem)
        raise MalformedEvent(problem)
    return webhook_event_apply(event=event)


# --- reconcile: repair what lost events left behind ------------------------------------------------


def _describe(subscription: Subscription | None) -> str:
    if subscription is None:
        return "missing"
    return (
        f"{subscription.plan.slug}/{subscription.status}/until {subscription.current_period_end:%Y-%m-%d}"
        f"{'/cancels' if subscription.cancel_at_period_end else ''}"
    )


@dataclass
class ReconcileReport:
    changed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    checked: int = 0


def subscriptions_reconcile(*, dry_run: bool = False) -> ReconcileReport:
    """Read every subscription from Stripe and repair local state that differs (a lost webhook).
    Stripe's current object is the truth, so it is applied as of now. One subscription that cannot
    be applied (a deleted account's customer, a price no plan sells, any error) is skipped and
    reported; the rest go on. ``dry_run`` reports what would change and writes nothing."""
    report = ReconcileReport()
    listing = stripe_client.client().v1.subscriptions.list(params={"status": "all", "limit": 100})
    for remote in listing.auto_paging_iter():
        obj = remote.to_dict()
        report.checked += 1
        try:
            with transaction.atomic():
                before = Subscription.objects.filter(stripe_subscription_id=obj["id"]).select_related("plan").first()
                before_text = _describe(before)
                after = subscription_sync(stripe_subscription=obj, as_of=timezone.now(), dry_run=dry_run)
                after_text = _describe(after)
                if dry_run:
                    transaction.set_rollback(True)
        except NotOurs as verdict:
            report.skipped.append(f"{obj['id']}: skipped ({verdict})")
            continue
        except ApplicationError as error:
            report.skipped.append(f"{obj['id']}: skipped ({error.message})")
            continue
        except Exception as error:  # one bad object must not stop the rest
            logger.exception("reconcile failed for %s", obj.get("id"))
            report.skipped.append(f"{obj.get('id')}: skipped ({error.__class__.__name__}: {error})")
            continue
        if before_text != after_text:
            verb = "would change" if dry_run else "changed"
            report.changed.append(f"{obj['id']} ({after.workspace.slug}) {verb}: {before_text} -> {after_text}")
    return report
