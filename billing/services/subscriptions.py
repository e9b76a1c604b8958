"""What a customer does with their subscription (Checkout, the Portal, closing the account) and
the plans staff give without Stripe (comps). The payment provider is billing.gateway's."""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from accounts.workspaces import workspace_owner
from billing.gateway import billing_gateway
from billing.models import BillingCustomer, Plan, Subscription, SubscriptionStatus
from billing.selectors import entitlements_for
from billing.services.ledger import quota_period_open
from core.audit import audit_record
from core.errors import ApplicationError, Conflict
from core.models import AuditAction


def customer_ensure(*, workspace) -> str:
    """The workspace's Stripe customer id, created once (the idempotency key makes a race create
    one), billed to the workspace's owner."""
    existing = BillingCustomer.objects.filter(workspace=workspace).first()
    if existing is not None:
        return existing.stripe_customer_id
    customer_id = billing_gateway().customer_create(workspace=workspace, email=workspace_owner(workspace).email)
    record, _ = BillingCustomer.objects.get_or_create(workspace=workspace, defaults={"stripe_customer_id": customer_id})
    return record.stripe_customer_id


MAX_SEATS = 1000


def seats_parse(value, *, plan: Plan, people: int = 1) -> int:
    """Seats as a customer asks for them: a whole number from ``people`` (members and pending
    invitations hold one each) to MAX_SEATS; always 1 on a plan not sold per seat."""
    if not plan.per_seat:
        return 1
    text = str(value if value is not None else 1).strip()
    if not (text.isascii() and text.isdigit()):  # "²" is a digit to isdigit(), not to int()
        raise ApplicationError(f"Seats must be a whole number, like 3; got {text[:20]!r}.", param="seats")
    seats = int(text)
    if seats < 1 or seats > MAX_SEATS:
        raise ApplicationError(f"Choose between 1 and {MAX_SEATS:,} seats.", param="seats")
    if seats < people:
        raise ApplicationError(
            f"{people} people hold seats in this workspace (members and pending invitations): choose at least "
            f"{people} seats, or remove members and revoke invitations first.",
            code="seats_below_members",
            param="seats",
        )
    return seats


def checkout_start(*, workspace, plan: Plan, success_url: str, cancel_url: str, seats: int = 1) -> str:
    """A Stripe Checkout session (mode subscription) for ``plan``; returns the URL to send the user to.
    Nothing is granted here: only the webhook that Stripe sends after payment grants the plan.

    One subscription per customer: refused while Stripe (not only the local mirror) shows the
    customer a subscription that bills or may bill; an open session for the same plan is reused
    and one for another plan expired, so two tabs cannot lead to two payments. The customer's row
    is locked meanwhile, so two requests from two processes take turns."""
    if not plan.is_active or not plan.stripe_price_id or plan.price_cents == 0:
        raise ApplicationError(f"The {plan.name} plan cannot be bought.", code="plan_not_for_sale")
    already = Conflict("You already have a subscription: change it in the billing portal.", code="already_subscribed")
    if entitlements_for(workspace).subscription is not None:
        raise already
    if Subscription.objects.filter(workspace=workspace, is_comp=False, status__in=SubscriptionStatus.LIVE).exists():
        raise already
    customer_id = customer_ensure(workspace=workspace)
    gateway = billing_gateway()
    with transaction.atomic():
        BillingCustomer.objects.select_for_update().get(workspace=workspace)
        if gateway.subscription_live_exists(customer_id=customer_id):
            raise already
        return gateway.checkout_session_start(
            workspace=workspace,
            plan=plan,
            seats=seats if plan.per_seat else 1,
            customer_id=customer_id,
            success_url=success_url,
            cancel_url=cancel_url,
        )


def seats_change(*, workspace, seats: int, webhook_url: str, actor=None) -> Subscription:
    """Ask the payment provider for ``seats`` on the workspace's subscription (validated by
    ``seats_parse``: never below the people holding seats). Nothing changes here: the webhook
    brings the new quantity, and the tokens of added seats come with their paid invoice."""
    subscription = entitlements_for(workspace).subscription
    if subscription is None or not subscription.plan.per_seat:
        raise ApplicationError(
            "This workspace's plan is not sold per seat: subscribe it to the Team plan to buy seats.",
            code="plan_not_per_seat",
        )
    if subscription.is_comp:
        raise ApplicationError("This plan was granted by Inkwell; contact us to change its seats.", code="comp")
    if seats != subscription.seats:
        billing_gateway().subscription_seats_set(subscription=subscription, seats=seats, webhook_url=webhook_url)
        audit_record(
            action=AuditAction.SEATS_CHANGED,
            user=actor,
            actor=actor,
            workspace=workspace,
            seats_from=subscription.seats,
            seats_to=seats,
        )
    return subscription


def portal_start(*, workspace, return_url: str) -> str:
    """A Customer Portal session, where the customer changes or cancels the subscription; returns
    the URL to send the user to. Stripe's Portal is refused while its settings would grant unpaid
    tokens (billing.gateway.portal_configuration_problem)."""
    customer = BillingCustomer.objects.filter(workspace=workspace).first()
    if customer is None:
        raise ApplicationError("You have no subscription to manage yet: pick a plan first.", code="no_customer")
    return billing_gateway().portal_session_start(
        workspace=workspace, customer_id=customer.stripe_customer_id, return_url=return_url
    )


def billing_close(*, workspace) -> None:
    """Before an account is deleted: cancel every subscription the customer has in Stripe (asked
    of Stripe, not only the mirror) and delete the Stripe customer with its cards. Raises
    ApplicationError if Stripe cannot be told, so the caller deletes nothing; safe to call again
    (a customer already deleted counts as done)."""
    customer = BillingCustomer.objects.filter(workspace=workspace).first()
    if customer is not None:
        billing_gateway().customer_close(customer_id=customer.stripe_customer_id)
    Subscription.objects.filter(workspace=workspace).exclude(status__in=SubscriptionStatus.ENDED).update(
        status=SubscriptionStatus.CANCELED, canceled_at=timezone.now()
    )


def plan_comp(*, workspace, plan: Plan, days: int, granted_by=None, seats: int = 1) -> Subscription:
    """Give ``plan`` for ``days`` without Stripe (partners, support): a subscription marked comp."""

    if days <= 0:
        raise ApplicationError("Comp a plan for at least one day.", param="days")
    now = timezone.now()
    with transaction.atomic():
        subscription = Subscription.objects.create(
            workspace=workspace,
            plan=plan,
            seats=max(1, seats),
            paid_seats=max(1, seats),
            status=SubscriptionStatus.ACTIVE,
            current_period_start=now,
            current_period_end=now + timedelta(days=days),
            is_comp=True,
            paid_plan=plan,
            paid_period_start=now,
        )
        # Each month of the comp is a period with the plan's allowance (entitlements_for): open
        # the first one now so the meter shows it.
        quota_period_open(workspace=workspace, entitlements=entitlements_for(workspace, now=now))
        audit_record(
            action=AuditAction.PLAN_COMPED,
            user=workspace.personal_of,
            workspace=workspace,
            actor=granted_by,
            plan=plan.slug,
            days=days,
        )
    return subscription
