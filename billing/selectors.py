from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from billing.models import Plan, QuotaPeriod, Subscription, SubscriptionStatus
from saas.errors import ApplicationError

# Statuses in which a subscription's plan applies (past_due too, for a grace period).
ENTITLED_STATUSES = (SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING)


@dataclass(frozen=True)
class Entitlements:
    """What a user may do now. Every limit check reads this, never the plan's fields directly."""

    plan: Plan
    subscription: Subscription | None
    period_start: datetime
    period_end: datetime

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
    def monthly_token_allowance(self) -> int:
        return self.plan.monthly_token_allowance

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


def entitlements_for(user, *, now: datetime | None = None) -> Entitlements:
    now = now or timezone.now()
    grace_start = now - timedelta(days=settings.BILLING_GRACE_DAYS)
    subscription = (
        Subscription.objects.select_related("plan")
        .filter(user=user, current_period_end__gt=now)
        .filter(Q(status__in=ENTITLED_STATUSES) | Q(status=SubscriptionStatus.PAST_DUE, past_due_since__gt=grace_start))
        .order_by("-current_period_end")
        .first()
    )
    if subscription is not None:
        return Entitlements(
            plan=subscription.plan,
            subscription=subscription,
            period_start=subscription.current_period_start,
            period_end=subscription.current_period_end,
        )
    start, end = calendar_month(now)
    return Entitlements(plan=default_plan(), subscription=None, period_start=start, period_end=end)


def quota_period_for(user, *, entitlements: Entitlements) -> QuotaPeriod | None:
    return QuotaPeriod.objects.filter(user=user, period_start=entitlements.period_start).first()


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


def quota_snapshot(user, *, entitlements: Entitlements) -> QuotaSnapshot:
    """The user's numbers this period; a period not opened yet holds the plan's full allowance."""
    period = quota_period_for(user, entitlements=entitlements)
    if period is None:
        return QuotaSnapshot(allowance=entitlements.monthly_token_allowance, used=0, reserved=0)
    return QuotaSnapshot(allowance=period.allowance, used=period.used, reserved=period.reserved)


def subscription_latest(user) -> Subscription | None:
    """The user's most recent subscription in any status (for the billing page)."""
    return Subscription.objects.select_related("plan").filter(user=user).order_by("-created_at").first()


def public_plans():
    return Plan.objects.filter(is_active=True, is_public=True).order_by("order", "price_cents")
