from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dateutil.relativedelta import relativedelta
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from billing import stripe_client
from billing.models import (
    BillingCustomer,
    MemberQuota,
    Plan,
    QuotaPeriod,
    Subscription,
    SubscriptionStatus,
    WebhookEvent,
)
from core.errors import ApplicationError


@dataclass(frozen=True)
class Entitlements:
    """What a workspace may do now. Every limit check reads this, never the plan's fields directly."""

    plan: Plan
    subscription: Subscription | None
    period_start: datetime
    period_end: datetime
    # The allowance a ledger row for this period starts with when the period is first used: the
    # plan's for Free and for comps; for a Stripe subscription the paid plan's once the period's
    # invoice is paid, else 0 (the grant comes with invoice.paid: tokens follow payment).
    opening_allowance: int = 0
    # Seats paid for (a per-seat plan's pool is its allowance x seats); 1 for other plans.
    seats: int = 1

    @property
    def in_grace(self) -> bool:
        """A failed renewal: the plan still applies until the grace period ends."""
        return self.subscription is not None and self.subscription.status == SubscriptionStatus.PAST_DUE

    @property
    def grace_ends_at(self) -> datetime | None:
        if not self.in_grace:
            return None
        return self.subscription.past_due_since + timedelta(days=settings.BILLING_GRACE_DAYS)

    @property
    def renewal_unpaid(self) -> bool:
        """The subscription's current period is not paid yet: the last paid period's ledger applies."""
        sub = self.subscription
        return (
            sub is not None
            and not sub.is_comp
            and (sub.paid_period_start is None or sub.paid_period_start < sub.current_period_start)
        )

    @property
    def pending_plan(self) -> Plan | None:
        """A plan the subscription was changed to whose invoice is not paid yet (limits stay the old plan's)."""
        sub = self.subscription
        if sub is None or sub.is_comp or sub.plan_id == self.plan.pk:
            return None
        return sub.plan

    @property
    def monthly_token_allowance(self) -> int:
        """The pool: the plan's allowance, times the paid seats on a per-seat plan."""
        return pool_allowance(self.plan, self.seats)

    @property
    def max_new_tokens(self) -> int:
        return self.plan.max_new_tokens

    @property
    def max_prompt_tokens(self) -> int:
        return self.plan.max_prompt_tokens

    @property
    def max_concurrent_jobs(self) -> int:
        return self.plan.max_concurrent_jobs

    @property
    def requests_per_minute(self) -> int:
        return self.plan.requests_per_minute

    @property
    def queue(self) -> str:
        return self.plan.queue_priority

    @property
    def allowed_models(self) -> tuple[str, ...]:
        return tuple(self.plan.allowed_models)

    @property
    def api_access(self) -> bool:
        return self.plan.api_access


def pool_allowance(plan: Plan, seats: int) -> int:
    return plan.monthly_token_allowance * (max(1, seats) if plan.per_seat else 1)


def seats_of(subscription: Subscription | None, *, paid: bool = True) -> int:
    """The seats a subscription has: bought (``paid=False``), or paid for (what grants tokens)."""
    if subscription is None:
        return 1
    if paid and not subscription.is_comp and subscription.paid_seats is not None:
        return max(1, min(subscription.paid_seats, subscription.seats))
    return max(1, subscription.seats)


def seats_for(workspace, *, entitlements: Entitlements | None = None) -> int:
    """The seats a workspace may fill with members and open invitations: those bought on a
    per-seat plan (bought, not only paid: a member can join while the seat's invoice is being
    paid; tokens still follow payment), else 1."""
    entitlements = entitlements or entitlements_for(workspace)
    if not entitlements.plan.per_seat:
        return 1
    return seats_of(entitlements.subscription, paid=False)


def default_plan() -> Plan:
    plan = Plan.objects.filter(is_default=True, is_active=True).first()
    if plan is None:
        raise ApplicationError(
            "Inkwell has no default plan yet; an operator must run `manage.py seed`.",
            code="not_configured",
            status_code=503,
        )
    return plan


def calendar_month(now: datetime) -> tuple[datetime, datetime]:
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


def comp_month(subscription: Subscription, now: datetime) -> tuple[datetime, datetime]:
    """The month of a comp that ``now`` falls in: each month of a comp is a period of its own,
    with its own allowance (the last one ends with the comp)."""
    start = subscription.current_period_start
    months = 0
    while start + relativedelta(months=months + 1) <= now:
        months += 1
    month_start = start + relativedelta(months=months)
    return month_start, min(start + relativedelta(months=months + 1), subscription.current_period_end)


def _subscription_entitlements(subscription: Subscription, now: datetime) -> Entitlements:
    if subscription.is_comp:
        start, end = comp_month(subscription, now)
        seats = seats_of(subscription)
        return Entitlements(
            plan=subscription.plan,
            subscription=subscription,
            period_start=start,
            period_end=end,
            opening_allowance=pool_allowance(subscription.plan, seats),
            seats=seats,
        )
    # Tokens follow payment: the plan whose invoice was paid sets the limits (an upgrade counts
    # once its invoice is paid), and a renewal not paid yet keeps the last paid period's ledger.
    plan = subscription.paid_plan or subscription.plan
    seats = seats_of(subscription)
    paid_start = subscription.paid_period_start
    if paid_start is not None and paid_start < subscription.current_period_start:
        return Entitlements(
            plan=plan,
            subscription=subscription,
            period_start=paid_start,
            period_end=subscription.current_period_end,
            seats=seats,
        )
    paid = paid_start is not None
    return Entitlements(
        plan=plan,
        subscription=subscription,
        period_start=subscription.current_period_start,
        period_end=subscription.current_period_end,
        opening_allowance=pool_allowance(plan, seats) if paid else 0,
        seats=seats,
    )


def entitlements_for(workspace, *, now: datetime | None = None) -> Entitlements:
    """The workspace's plan and limits now (its subscription's, else the default plan's)."""
    now = now or timezone.now()
    grace_start = now - timedelta(days=settings.BILLING_GRACE_DAYS)
    subscription = (
        Subscription.objects.select_related("plan", "paid_plan")
        .filter(workspace=workspace, current_period_end__gt=now)
        .filter(
            Q(status__in=SubscriptionStatus.ENTITLED)
            | Q(status=SubscriptionStatus.PAST_DUE, past_due_since__gt=grace_start)
        )
        .order_by("-current_period_end")
        .first()
    )
    if subscription is not None:
        return _subscription_entitlements(subscription, now)
    start, end = calendar_month(now)
    plan = default_plan()
    # The free allowance is one per person: their personal workspace's. A team workspace without a
    # subscription has the default plan's limits but no tokens, or a new workspace a click away
    # would be a new free allowance each time.
    free = plan.monthly_token_allowance if workspace.personal_of_id is not None else 0
    return Entitlements(plan=plan, subscription=None, period_start=start, period_end=end, opening_allowance=free)


def quota_period_for(workspace, *, entitlements: Entitlements) -> QuotaPeriod | None:
    return QuotaPeriod.objects.filter(workspace=workspace, period_start=entitlements.period_start).first()


@dataclass(frozen=True)
class QuotaSnapshot:
    allowance: int
    used: int
    reserved: int

    @property
    def remaining(self) -> int:
        return max(0, self.allowance - self.used - self.reserved)

    @property
    def percent(self) -> int:
        return min(100, round(100 * (self.used + self.reserved) / self.allowance)) if self.allowance else 100


def quota_snapshot(workspace, *, entitlements: Entitlements) -> QuotaSnapshot:
    """The workspace's pool this period; a period not opened yet holds the plan's full allowance."""
    period = quota_period_for(workspace, entitlements=entitlements)
    if period is None:
        return QuotaSnapshot(allowance=entitlements.opening_allowance, used=0, reserved=0)
    return QuotaSnapshot(allowance=period.allowance, used=period.used, reserved=period.reserved)


def member_snapshot(workspace, user, *, entitlements: Entitlements, cap: int | None) -> QuotaSnapshot | None:
    """A capped member's own numbers this period (their sub-ledger against their cap); None
    without a cap."""
    if cap is None:
        return None
    row = (
        MemberQuota.objects.filter(
            quota_period__workspace=workspace, quota_period__period_start=entitlements.period_start, user=user
        )
        .values("used", "reserved")
        .first()
    ) or {"used": 0, "reserved": 0}
    return QuotaSnapshot(allowance=cap, used=row["used"], reserved=row["reserved"])


def member_usage_this_period(workspace, *, entitlements: Entitlements) -> dict[int, int]:
    """Tokens used this period by each member (user id), from the sub-ledger."""
    return dict(
        MemberQuota.objects.filter(
            quota_period__workspace=workspace, quota_period__period_start=entitlements.period_start
        ).values_list("user_id", "used")
    )


def subscription_latest(workspace) -> Subscription | None:
    """The workspace's most recent subscription in any status (for the billing page)."""
    return Subscription.objects.select_related("plan").filter(workspace=workspace).order_by("-created_at").first()


def public_plans():
    return Plan.objects.filter(is_active=True, is_public=True).order_by("order", "price_cents")


def _isoformat(moment: datetime | None) -> str:
    return moment.isoformat() if moment else ""


def invoices_known(workspace) -> list[dict]:
    """The workspace's invoices as Inkwell knows them: from the Stripe events it stored (the newest
    copy of each invoice). The task does not ask Stripe: it may run where Stripe cannot be reached,
    and the billing portal already lists the PDFs."""
    customer = BillingCustomer.objects.filter(workspace=workspace).first()
    if customer is None:
        return []
    newest: dict[str, dict] = {}
    events = WebhookEvent.objects.filter(
        type__startswith="invoice.", payload__data__object__customer=customer.stripe_customer_id
    ).order_by("stripe_created_at", "received_at")
    for event in events:
        invoice = event.payload["data"]["object"]
        newest[invoice.get("id", "")] = invoice
    lines = []
    for invoice in newest.values():
        period_start, period_end = stripe_client.invoice_period(invoice)
        lines.append(
            {
                "id": invoice.get("id", ""),
                "number": invoice.get("number") or "",
                "status": invoice.get("status") or "",
                "billing_reason": invoice.get("billing_reason") or "",
                "currency": invoice.get("currency") or "",
                "amount_due_cents": invoice.get("amount_due"),
                "amount_paid_cents": invoice.get("amount_paid"),
                "period_start": _isoformat(period_start),
                "period_end": _isoformat(period_end),
                "paid_at": _isoformat(stripe_client.invoice_paid_at(invoice)),
                "hosted_invoice_url": invoice.get("hosted_invoice_url") or "",
            }
        )
    return sorted(lines, key=lambda line: line["period_start"])
