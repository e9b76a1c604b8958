from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import stripe as stripe_library
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone

from billing import sandbox, stripe_client
from billing.models import (
    BillingCustomer,
    Plan,
    QueuePriority,
    QuotaPeriod,
    QuotaTopUp,
    Subscription,
    SubscriptionStatus,
    WebhookEvent,
    WebhookStatus,
)
from billing.selectors import Entitlements, entitlements_for
from core.audit import audit_record
from core.errors import ApplicationError, Conflict, QuotaExceeded
from core.models import AuditAction

logger = logging.getLogger(__name__)
stripe_errors = stripe_library.StripeError

ENTITLED_OR_GRACE = (SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING, SubscriptionStatus.PAST_DUE)


def quota_period_open(*, user, entitlements: Entitlements) -> QuotaPeriod:
    """The ledger row of the user's current period, created the first time it is needed with the
    allowance the period has earned (``Entitlements.opening_allowance``): Free's and a comp's at
    once, a Stripe period's only once its invoice is paid."""
    period, _ = QuotaPeriod.objects.get_or_create(
        user=user,
        period_start=entitlements.period_start,
        defaults={"period_end": entitlements.period_end, "allowance": entitlements.opening_allowance},
    )
    return period


def quota_reserve(*, period: QuotaPeriod, tokens: int) -> None:
    """Reserve ``tokens`` with one conditional UPDATE: it succeeds only while the allowance still
    covers them, so concurrent submits from any number of processes can never overspend."""
    reserved = QuotaPeriod.objects.filter(pk=period.pk, allowance__gte=F("used") + F("reserved") + tokens).update(
        reserved=F("reserved") + tokens
    )
    if reserved:
        return
    period.refresh_from_db()
    raise QuotaExceeded(
        f"Not enough tokens left this period: this request needs up to {tokens:,} tokens "
        f"(prompt + max_new_tokens) and {period.remaining:,} remain until the reset on "
        f"{period.period_end:%Y-%m-%d %H:%M} UTC. Lower max_new_tokens, shorten the prompt, or upgrade your plan.",
        code="insufficient_quota",
        extra={"tokens_remaining": period.remaining, "resets_at": period.period_end.isoformat()},
    )


def quota_settle(*, period_id: int, reserved: int, charged: int) -> None:
    """Release a job's reservation and charge what it actually processed. Callers run this in the
    same transaction as the job's one final status change, which is what makes it exactly once."""
    if not 0 <= charged <= reserved:
        raise ValueError(f"cannot charge {charged} tokens against a reservation of {reserved}")
    QuotaPeriod.objects.filter(pk=period_id).update(reserved=F("reserved") - reserved, used=F("used") + charged)


DEFAULT_PLANS = (
    {
        "slug": "free",
        "name": "Free",
        "price_cents": 0,
        "monthly_token_allowance": 50_000,
        "max_new_tokens": 256,
        "max_prompt_tokens": 1_024,
        "max_concurrent_jobs": 2,
        "requests_per_minute": 10,
        "queue_priority": QueuePriority.LOW,
        "api_access": False,
        "is_default": True,
        "order": 0,
    },
    {
        "slug": "pro",
        "name": "Pro",
        "price_cents": 1_900,
        "monthly_token_allowance": 2_000_000,
        "max_new_tokens": 1_024,
        "max_prompt_tokens": 4_096,
        "max_concurrent_jobs": 8,
        "requests_per_minute": 60,
        "queue_priority": QueuePriority.NORMAL,
        "api_access": True,
        "order": 1,
    },
    {
        "slug": "team",
        "name": "Team",
        "price_cents": 9_900,
        "monthly_token_allowance": 15_000_000,
        "max_new_tokens": 2_048,
        "max_prompt_tokens": 8_192,
        "max_concurrent_jobs": 32,
        "requests_per_minute": 300,
        "queue_priority": QueuePriority.HIGH,
        "api_access": True,
        "order": 2,
    },
)


def plans_seed(*, models: list[str]) -> list[Plan]:
    """Create Free, Pro and Team once; plans that exist are left as the admins edited them.
    Free gets the first model, paid plans every model configured now."""
    created = []
    for values in DEFAULT_PLANS:
        allowed = models[:1] if values["slug"] == "free" else list(models)
        plan, was_created = Plan.objects.get_or_create(
            slug=values["slug"], defaults={**values, "allowed_models": allowed}
        )
        if was_created:
            plan_stripe_sync(plan=plan)
            created.append(plan)
    return created


# --- Stripe: customers, Checkout, Portal ------------------------------------------------------------


def customer_ensure(*, user) -> str:
    """The user's Stripe customer id, created once (the idempotency key makes a race create one)."""
    existing = BillingCustomer.objects.filter(user=user).first()
    if existing is not None:
        return existing.stripe_customer_id
    if settings.BILLING_SANDBOX:
        customer_id = sandbox.customer_id(user)
    else:
        customer = stripe_client.client().v1.customers.create(
            params={"email": user.email, "metadata": {"user_id": str(user.pk)}},
            options={"idempotency_key": f"inkwell-customer-{user.pk}"},
        )
        customer_id = customer.id
    record, _ = BillingCustomer.objects.get_or_create(user=user, defaults={"stripe_customer_id": customer_id})
    return record.stripe_customer_id


# Stripe subscription statuses that still bill, or may: a customer holding one must not get another.
LIVE_STRIPE_STATUSES = ("active", "trialing", "past_due", "unpaid", "incomplete", "paused")
CHECKOUT_EXPIRES_SECONDS = 30 * 60  # Stripe's shortest; an abandoned session stops being payable soon


def _stripe_unavailable(what: str, error: stripe_library.StripeError) -> ApplicationError:
    logger.warning("Stripe refused or failed %s: %s", what, error)
    return ApplicationError(
        f"Our payment provider could not {what} just now ({error.user_message or 'no details'}). "
        "Nothing was charged; please try again in a minute.",
        code="payment_provider_error",
        status_code=502,
    )


def _live_stripe_subscription(stripe, customer_id: str) -> dict | None:
    listing = stripe.v1.subscriptions.list(params={"customer": customer_id, "status": "all", "limit": 100})
    for remote in listing.data:
        if remote["status"] in LIVE_STRIPE_STATUSES:
            return remote
    return None


def checkout_start(*, user, plan: Plan, success_url: str, cancel_url: str) -> str:
    """A Stripe Checkout session (mode subscription) for ``plan``; returns the URL to send the user to.
    Nothing is granted here: only the webhook that Stripe sends after payment grants the plan.

    One subscription per customer: refused while Stripe (not only the local mirror) shows the
    customer a subscription that bills or may bill; an open session for the same plan is reused
    and one for another plan expired, so two tabs cannot lead to two payments. The customer's row
    is locked meanwhile, so two requests from two processes take turns."""
    if not plan.is_active or not plan.stripe_price_id or plan.price_cents == 0:
        raise ApplicationError(f"The {plan.name} plan cannot be bought.", code="plan_not_for_sale")
    already = Conflict("You already have a subscription: change it in the billing portal.", code="already_subscribed")
    if entitlements_for(user).subscription is not None:
        raise already
    if Subscription.objects.filter(user=user, is_comp=False, status__in=LIVE_STRIPE_STATUSES).exists():
        raise already
    customer_id = customer_ensure(user=user)
    if settings.BILLING_SANDBOX:
        return sandbox.checkout_url(
            user=user, plan=plan, customer_id=customer_id, success_url=success_url, cancel_url=cancel_url
        )
    stripe = stripe_client.client()
    with transaction.atomic():
        BillingCustomer.objects.select_for_update().get(user=user)
        try:
            if _live_stripe_subscription(stripe, customer_id) is not None:
                raise already
            open_sessions = stripe.v1.checkout.sessions.list(
                params={"customer": customer_id, "status": "open", "limit": 10}
            )
            for session in (s.to_dict() for s in open_sessions.data):
                if (session.get("metadata") or {}).get("price") == plan.stripe_price_id and session.get("url"):
                    return session["url"]
                stripe.v1.checkout.sessions.expire(session["id"])
            session = stripe.v1.checkout.sessions.create(
                params={
                    "mode": "subscription",
                    "customer": customer_id,
                    "line_items": [{"price": plan.stripe_price_id, "quantity": 1}],
                    "success_url": success_url + "?session_id={CHECKOUT_SESSION_ID}",
                    "cancel_url": cancel_url,
                    "client_reference_id": str(user.pk),
                    "expires_at": int(time.time()) + CHECKOUT_EXPIRES_SECONDS,
                    "metadata": {"user_id": str(user.pk), "plan": plan.slug, "price": plan.stripe_price_id},
                    "subscription_data": {"metadata": {"user_id": str(user.pk), "plan": plan.slug}},
                },
                options={"idempotency_key": f"inkwell-checkout-{user.pk}-{plan.stripe_price_id}-{uuid.uuid4().hex}"},
            )
        except stripe_errors as error:
            raise _stripe_unavailable("start the checkout", error) from error
    return session.url


PORTAL_CHECK_SECONDS = 600
_portal_checked: dict[str, float] = {}


def portal_configuration_problem(client) -> str | None:
    """Why the Customer Portal's default configuration would let tokens go unpaid, or None.

    Plan changes must be invoiced at once (``proration_behavior=always_invoice``): Inkwell raises
    an allowance when the upgrade's invoice is paid, so a change that is only prorated onto the
    next invoice would leave the customer paying for Team and getting Pro until the renewal, and
    one with no proration would never be paid for."""
    configurations = client.v1.billing_portal.configurations.list(params={"is_default": True, "limit": 1})
    if not configurations.data:
        return "Stripe has no default Customer Portal configuration"
    configuration = configurations.data[0].to_dict()
    update = (configuration.get("features") or {}).get("subscription_update") or {}
    if update.get("enabled") and update.get("proration_behavior") != "always_invoice":
        return (
            f"the Customer Portal's plan changes use proration_behavior={update.get('proration_behavior')!r}; "
            "set it to 'always_invoice' (Settings > Billing > Customer portal > Subscriptions: "
            "'Prorate charges and credits' and 'Invoice immediately')"
        )
    return None


def _portal_check(client) -> None:
    """Refuse to open a Portal whose settings would grant unpaid tokens; checked every ten minutes."""
    if time.monotonic() - _portal_checked.get("at", -PORTAL_CHECK_SECONDS) < PORTAL_CHECK_SECONDS:
        return
    problem = portal_configuration_problem(client)
    if problem is not None:
        logger.error("billing portal refused: %s", problem)
        raise ApplicationError(
            "The billing portal is unavailable until Inkwell's operators fix its settings; your plan is "
            "unchanged. Please contact support to change your subscription.",
            code="portal_misconfigured",
            status_code=503,
        )
    _portal_checked["at"] = time.monotonic()


def portal_start(*, user, return_url: str) -> str:
    customer = BillingCustomer.objects.filter(user=user).first()
    if customer is None:
        raise ApplicationError("You have no subscription to manage yet: pick a plan first.", code="no_customer")
    if settings.BILLING_SANDBOX:
        return sandbox.portal_url(user=user, return_url=return_url)
    try:
        _portal_check(stripe_client.client())
        session = stripe_client.client().v1.billing_portal.sessions.create(
            params={"customer": customer.stripe_customer_id, "return_url": return_url},
            options={"idempotency_key": f"inkwell-portal-{user.pk}-{int(time.time() // 60)}"},
        )
    except stripe_errors as error:
        raise _stripe_unavailable("open the billing portal", error) from error
    return session.url


def billing_close(*, user) -> None:
    """Before an account is deleted: cancel every subscription the customer has in Stripe (asked
    of Stripe, not only the mirror) and delete the Stripe customer with its cards. Raises
    ApplicationError if Stripe cannot be told, so the caller deletes nothing; safe to call again
    (a customer already deleted counts as done)."""
    customer = BillingCustomer.objects.filter(user=user).first()
    if customer is not None and not settings.BILLING_SANDBOX:
        client = stripe_client.client()
        customer_id = customer.stripe_customer_id
        try:
            listing = client.v1.subscriptions.list(params={"customer": customer_id, "status": "all", "limit": 100})
            for remote in listing.auto_paging_iter():
                if remote["status"] in LIVE_STRIPE_STATUSES:
                    client.v1.subscriptions.cancel(
                        remote["id"], options={"idempotency_key": f"inkwell-close-{remote['id']}"}
                    )
            client.v1.customers.delete(customer_id)
        except stripe_library.InvalidRequestError as error:
            if error.code != "resource_missing":  # already deleted: a retry after a partial failure
                raise _stripe_unavailable("close your subscription", error) from error
        except stripe_errors as error:
            raise _stripe_unavailable("close your subscription", error) from error
    Subscription.objects.filter(user=user).exclude(
        status__in=[SubscriptionStatus.CANCELED, SubscriptionStatus.INCOMPLETE_EXPIRED]
    ).update(status=SubscriptionStatus.CANCELED, canceled_at=timezone.now())


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


def billing_personal_data_erase(*, user) -> int:
    """Erase the personal data of ``user`` from stored Stripe events (account deletion)."""
    customer = BillingCustomer.objects.filter(user=user).first()
    if customer is None:
        return 0
    return webhook_payloads_scrub(customer_id=customer.stripe_customer_id)


def webhook_payloads_scrub_expired() -> int:
    cutoff = timezone.now() - timedelta(days=settings.BILLING_EVENT_RETENTION_DAYS)
    return webhook_payloads_scrub(older_than=cutoff)


# --- Stripe: webhooks ---------------------------------------------------------------------------------


class NotOurs(Exception):
    """The event is about a customer Inkwell does not know (for instance a deleted account):
    acknowledge it and change nothing, so Stripe stops retrying."""


class RetryLater(Exception):
    """The event cannot be applied yet (say, an invoice for a subscription not seen yet): answer
    5xx so that Stripe delivers it again later."""


def _user_for(customer_id: str | None, metadata: dict | None):
    customer = BillingCustomer.objects.select_related("user").filter(stripe_customer_id=customer_id).first()
    if customer is not None:
        return customer.user
    user_id = (metadata or {}).get("user_id")
    if user_id:
        return get_user_model().objects.filter(pk=user_id).first()
    return None


def quota_period_grant(*, user, period_start, period_end, plan: Plan) -> QuotaPeriod:
    """A paid period's ledger row, with the allowance it was paid for: the plan's allowance plus
    the period's top-ups (recomputed, never added to, so a replayed invoice grants nothing more and
    an upgrade keeps the top-ups)."""
    period, _ = QuotaPeriod.objects.get_or_create(
        user=user, period_start=period_start, defaults={"period_end": period_end, "allowance": 0}
    )
    top_ups = QuotaTopUp.objects.filter(quota_period=period).aggregate(total=Sum("tokens"))["total"] or 0
    QuotaPeriod.objects.filter(pk=period.pk).update(allowance=plan.monthly_token_allowance + top_ups)
    period.refresh_from_db()
    return period


def subscription_sync(*, stripe_subscription: dict, as_of: datetime, dry_run: bool = False) -> Subscription:
    """Recompute the local subscription from Stripe's object. ``as_of`` is when Stripe produced that
    state (the event's time): an older state than the one stored changes nothing, and a canceled
    subscription stays canceled, so late and out-of-order events converge."""
    obj = stripe_subscription
    user = _user_for(stripe_client.object_id(obj.get("customer")), obj.get("metadata"))
    if user is None:
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
    get_user_model().objects.select_for_update().filter(pk=user.pk).first()
    local = Subscription.objects.select_for_update().filter(stripe_subscription_id=obj["id"]).first()
    if local is not None:
        if local.stripe_synced_at and as_of < local.stripe_synced_at:
            return local
        if local.status == SubscriptionStatus.CANCELED and status != SubscriptionStatus.CANCELED:
            return local
        # Events are stamped to the second: of two from the same second, an "incomplete" state
        # (the subscription as first created) never overrides one that is already paid for.
        tied = local.stripe_synced_at is not None and as_of == local.stripe_synced_at
        if tied and status == SubscriptionStatus.INCOMPLETE and local.status in ENTITLED_OR_GRACE:
            return local
    before = (local.plan_id, local.status) if local is not None else None
    local = local or Subscription(stripe_subscription_id=obj["id"])
    local.user = user
    local.plan = plan
    local.status = status
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
    if status in LIVE_STRIPE_STATUSES and _older_live_subscription(local) is not None:
        local = _duplicate_cancel(local=local, stripe_subscription=obj, call_stripe=not dry_run)
        status = local.status
    if before != (plan.pk, status):

        audit_record(action=AuditAction.PLAN_CHANGED, user=user, plan=plan.slug, status=status, subscription=obj["id"])
    # No tokens here: a subscription's state says nothing of payment (a renewal is "active" an hour
    # before its card is tried). The allowance comes with invoice.paid.
    return local


def _older_live_subscription(local: Subscription) -> Subscription | None:
    return (
        Subscription.objects.filter(
            user=local.user, is_comp=False, status__in=LIVE_STRIPE_STATUSES, created_at__lt=local.created_at
        )
        .exclude(pk=local.pk)
        .first()
    )


def _duplicate_cancel(*, local: Subscription, stripe_subscription: dict, call_stripe: bool = True) -> Subscription:
    """A second live subscription of one customer (two tabs, a retried Checkout): cancel the newer
    one at once, refund its unused time, and tell staff through the audit log."""

    kept = _older_live_subscription(local)
    refunded = _cancel_with_refund(stripe_subscription) if call_stripe and not settings.BILLING_SANDBOX else 0
    Subscription.objects.filter(pk=local.pk).update(status=SubscriptionStatus.CANCELED, canceled_at=timezone.now())
    local.refresh_from_db()
    audit_record(
        action=AuditAction.DUPLICATE_SUBSCRIPTION,
        user=local.user,
        subscription=local.stripe_subscription_id,
        kept=kept.stripe_subscription_id if kept else "",
        refunded_cents=refunded,
    )
    logger.warning("cancelled duplicate subscription %s of user %s", local.stripe_subscription_id, local.user_id)
    return local


def _cancel_with_refund(subscription: dict) -> int:
    """Cancel a subscription now and refund the unused share of what its latest invoice took.
    Idempotency keys make a retried webhook repeat nothing. Returns the cents refunded."""
    client = stripe_client.client()
    subscription_id = subscription["id"]
    client.v1.subscriptions.cancel(
        subscription_id, options={"idempotency_key": f"inkwell-dup-cancel-{subscription_id}"}
    )
    invoice_id = stripe_client.object_id(subscription.get("latest_invoice"))
    if not invoice_id:
        return 0
    start, end = stripe_client.subscription_period(subscription)
    now = timezone.now()
    unused = 1.0 if not (start and end and end > start) else max(0.0, min(1.0, (end - now) / (end - start)))
    refunded = 0
    for payment in (p.to_dict() for p in client.v1.invoice_payments.list(params={"invoice": invoice_id}).data):
        intent = stripe_client.object_id((payment.get("payment") or {}).get("payment_intent"))
        amount = round((payment.get("amount_paid") or 0) * unused)
        if payment.get("status") != "paid" or not intent or amount <= 0:
            continue
        client.v1.refunds.create(
            params={"payment_intent": intent, "amount": amount, "reason": "duplicate"},
            options={"idempotency_key": f"inkwell-dup-refund-{payment['id']}"},
        )
        refunded += amount
    return refunded


def _on_checkout_completed(session: dict, as_of: datetime) -> None:
    customer_id = stripe_client.object_id(session.get("customer"))
    user = _user_for(customer_id, {"user_id": session.get("client_reference_id")})
    if user is not None and customer_id:
        BillingCustomer.objects.get_or_create(user=user, defaults={"stripe_customer_id": customer_id})


def _on_subscription(subscription: dict, as_of: datetime) -> None:
    subscription_sync(stripe_subscription=subscription, as_of=as_of)


def _local_subscription_for(invoice: dict) -> Subscription | None:
    subscription_id = stripe_client.invoice_subscription_id(invoice)
    if subscription_id is None:
        return None  # not a subscription invoice
    local = Subscription.objects.select_for_update().filter(stripe_subscription_id=subscription_id).first()
    if local is None and _user_for(stripe_client.object_id(invoice.get("customer")), None) is None:
        raise NotOurs(f"invoice {invoice.get('id')} is for a customer Inkwell does not know")
    if local is None:
        raise RetryLater(f"invoice {invoice.get('id')} names subscription {subscription_id}, not seen yet")
    return local


def _invoice_plan(invoice: dict, fallback: Plan) -> Plan:
    """The plan an invoice pays for: the price of its largest line (a proration invoice credits
    the old plan's unused time and charges the new plan's rest; the charge is the larger line)."""
    priced = [line for line in stripe_client.invoice_lines(invoice) if line["price"]]
    for line in sorted(priced, key=lambda line: line["amount"], reverse=True):
        plan = Plan.objects.filter(stripe_price_id=line["price"]).first()
        if plan is not None:
            return plan
    return fallback


def _on_invoice_paid(invoice: dict, as_of: datetime) -> None:
    """Tokens follow payment: a paid invoice grants the period it pays for its plan's allowance.
    A renewal (subscription_cycle) opens the new period; an upgrade's proration invoice
    (subscription_update) raises the current period to the new plan."""
    local = _local_subscription_for(invoice)
    if local is None:
        return
    plan = _invoice_plan(invoice, fallback=local.plan)
    paid_at = stripe_client.invoice_paid_at(invoice) or as_of
    if invoice.get("billing_reason") == "subscription_update":
        # Lines of a mid-period change start at the change; the ledger period is the subscription's.
        current = (
            QuotaPeriod.objects.filter(user=local.user, period_start__lte=paid_at, period_end__gt=paid_at)
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
        if not QuotaPeriod.objects.filter(user=local.user, period_start=period_start).exists():
            quota_period_grant(user=local.user, period_start=period_start, period_end=period_end, plan=plan)
        return
    quota_period_grant(user=local.user, period_start=period_start, period_end=period_end, plan=plan)
    Subscription.objects.filter(pk=local.pk).update(
        payment_failed_at=None, paid_plan=plan, paid_period_start=period_start, paid_at=paid_at
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


# --- Stripe: reconcile and plan sync ----------------------------------------------------------------


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
            report.changed.append(f"{obj['id']} ({after.user.email}) {verb}: {before_text} -> {after_text}")
    return report


def plan_stripe_sync(*, plan: Plan) -> Plan:
    """Create or update the plan's Stripe Product and Price. Prices are immutable in Stripe: a new
    amount or currency makes a new Price, and the old one is archived."""
    if plan.price_cents == 0:
        return plan
    if settings.BILLING_SANDBOX:
        plan.stripe_price_id = sandbox.price_id(plan)
        plan.stripe_price_cents, plan.stripe_price_currency = plan.price_cents, plan.currency
        Plan.objects.filter(pk=plan.pk).update(
            stripe_price_id=plan.stripe_price_id,
            stripe_price_cents=plan.stripe_price_cents,
            stripe_price_currency=plan.stripe_price_currency,
        )
        return plan
    stripe = stripe_client.client()
    if not plan.stripe_product_id:
        product = stripe.v1.products.create(
            params={"name": f"Inkwell {plan.name}", "metadata": {"plan": plan.slug}},
            options={"idempotency_key": f"inkwell-product-{plan.pk}"},
        )
        plan.stripe_product_id = product.id
    else:
        stripe.v1.products.update(plan.stripe_product_id, params={"name": f"Inkwell {plan.name}"})
    if (plan.stripe_price_cents, plan.stripe_price_currency) != (plan.price_cents, plan.currency):
        old_price = plan.stripe_price_id
        price = stripe.v1.prices.create(
            params={
                "product": plan.stripe_product_id,
                "unit_amount": plan.price_cents,
                "currency": plan.currency,
                "recurring": {"interval": "month"},
                "metadata": {"plan": plan.slug},
            },
            # A key of its own each time: a key made of the amount alone would replay the Price
            # archived by an A -> B -> A change, leaving the plan on an inactive price.
            options={
                "idempotency_key": f"inkwell-price-{plan.pk}-{plan.price_cents}-{plan.currency}-{uuid.uuid4().hex}"
            },
        )
        plan.stripe_price_id = price.id
        plan.stripe_price_cents, plan.stripe_price_currency = plan.price_cents, plan.currency
        if old_price:
            stripe.v1.prices.update(old_price, params={"active": False})
    Plan.objects.filter(pk=plan.pk).update(
        stripe_product_id=plan.stripe_product_id,
        stripe_price_id=plan.stripe_price_id,
        stripe_price_cents=plan.stripe_price_cents,
        stripe_price_currency=plan.stripe_price_currency,
    )
    return plan


# --- staff actions ---------------------------------------------------------------------------------


def quota_top_up(*, user, tokens: int, reason: str, granted_by=None) -> QuotaTopUp:
    """Raise the user's current allowance by ``tokens``, once, with a reason, in the audit log."""

    if tokens <= 0:
        raise ApplicationError("A top-up must add at least one token.", param="tokens")
    if not reason.strip():
        raise ApplicationError("Say why the tokens are granted.", param="reason")
    entitlements = entitlements_for(user)
    with transaction.atomic():
        period = quota_period_open(user=user, entitlements=entitlements)
        top_up = QuotaTopUp.objects.create(
            user=user, quota_period=period, tokens=tokens, reason=reason.strip(), granted_by=granted_by
        )
        QuotaPeriod.objects.filter(pk=period.pk).update(allowance=F("allowance") + tokens)
        audit_record(action=AuditAction.TOP_UP, user=user, actor=granted_by, tokens=tokens, reason=reason.strip())
    return top_up


def plan_comp(*, user, plan: Plan, days: int, granted_by=None) -> Subscription:
    """Give ``plan`` for ``days`` without Stripe (partners, support): a subscription marked comp."""

    if days <= 0:
        raise ApplicationError("Comp a plan for at least one day.", param="days")
    now = timezone.now()
    with transaction.atomic():
        subscription = Subscription.objects.create(
            user=user,
            plan=plan,
            status=SubscriptionStatus.ACTIVE,
            current_period_start=now,
            current_period_end=now + timedelta(days=days),
            is_comp=True,
            paid_plan=plan,
            paid_period_start=now,
        )
        # Each month of the comp is a period with the plan's allowance (entitlements_for): open
        # the first one now so the meter shows it.
        quota_period_open(user=user, entitlements=entitlements_for(user, now=now))
        audit_record(action=AuditAction.PLAN_COMPED, user=user, actor=granted_by, plan=plan.slug, days=days)
    return subscription
