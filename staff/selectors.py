"""The numbers of the business, for staff: revenue, subscribers, seats and workspaces, usage,
queue and cost. Reads accounts, billing and inference; writes nothing."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta

from django.conf import settings
from django.db.models import Count, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from accounts.models import Membership, Workspace
from billing.models import Plan, Subscription, SubscriptionStatus, UsageRecord
from billing.selectors import calendar_month, seats_of
from core.models import AuditEvent
from inference.models import GenerationJob, JobStatus


def _p95(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


@dataclass(frozen=True)
class PlanNumbers:
    """One plan's line on the dashboard, for the calendar month so far."""

    plan: str
    subscribers: int
    seats: int  # seats bought on the plan's subscriptions (1 each on a plan not sold per seat)
    mrr_cents: int
    gpu_seconds: float
    tokens: int
    jobs: int
    cost: float
    revenue: float
    margin: float


@dataclass(frozen=True)
class BusinessNumbers:
    mrr: float
    subscribers: int
    by_plan: dict[str, PlanNumbers]  # by plan slug, highest revenue first
    new_subscribers: int
    churned_subscribers: int
    tokens_per_day: list[tuple[date, int]]  # the last 30 days, oldest first
    jobs_per_day: list[tuple[date, int]]
    failed_rate: float  # of the jobs that ended in the last 7 days
    queue_depth: int
    wait_p95_seconds: float | None  # jobs started in the last hour; None when there were none
    gpu_hour_cost: float
    workspaces: int  # every workspace, personal ones included
    team_workspaces: int  # workspaces that are nobody's personal one
    team_members: int  # memberships of team workspaces (someone in two teams counts twice)
    seats_sold: int  # seats bought on paying (entitled, not comp) per-seat subscriptions
    seat_mrr: float  # the part of ``mrr`` that per-seat plans bring: price x seats


def subscription_mrr_cents(subscription: Subscription) -> int:
    """What the subscription bills a month: the plan's price, times the seats bought on a plan
    priced per seat (Stripe's item quantity, the number the invoice is for)."""
    plan = subscription.plan
    return plan.price_cents * (seats_of(subscription, paid=False) if plan.per_seat else 1)


def business_numbers(*, now=None) -> BusinessNumbers:
    now = now or timezone.now()
    month_start, _ = calendar_month(now)
    paying = Subscription.objects.filter(
        status__in=SubscriptionStatus.ENTITLED, current_period_end__gt=now, is_comp=False
    ).select_related("plan")
    plans = {plan.slug: plan for plan in Plan.objects.all()}
    by_plan: dict[str, dict] = defaultdict(
        lambda: {"subscribers": 0, "seats": 0, "mrr_cents": 0, "gpu_seconds": 0.0, "tokens": 0, "jobs": 0}
    )
    seats_sold = seat_mrr_cents = 0
    for subscription in paying:
        row = by_plan[subscription.plan.slug]
        mrr_cents = subscription_mrr_cents(subscription)
        row["subscribers"] += 1
        row["seats"] += seats_of(subscription, paid=False)
        row["mrr_cents"] += mrr_cents
        if subscription.plan.per_seat:
            seats_sold += seats_of(subscription, paid=False)
            seat_mrr_cents += mrr_cents
    month_usage = (
        UsageRecord.objects.filter(created_at__gte=month_start)
        .values("plan_slug")
        .annotate(run_ms=Sum("run_ms"), tokens=Sum("tokens_charged"), jobs=Count("id"))
    )
    for row in month_usage:
        target = by_plan[row["plan_slug"]]
        target["gpu_seconds"] = (row["run_ms"] or 0) / 1000
        target["tokens"] = row["tokens"] or 0
        target["jobs"] = row["jobs"]
    lines: dict[str, PlanNumbers] = {}
    for slug, row in sorted(by_plan.items(), key=lambda item: -item[1]["mrr_cents"]):
        cost = row["gpu_seconds"] / 3600 * settings.GPU_HOUR_COST
        revenue = row["mrr_cents"] / 100
        lines[slug] = PlanNumbers(
            plan=plans[slug].name if slug in plans else slug, cost=cost, revenue=revenue, margin=revenue - cost, **row
        )

    since = now - timedelta(days=30)
    daily = {
        row["day"]: row
        for row in UsageRecord.objects.filter(created_at__gte=since)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(tokens=Sum("tokens_charged"), jobs=Count("id"))
    }
    days = [(since + timedelta(days=i + 1)).date() for i in range(30)]
    week = UsageRecord.objects.filter(created_at__gte=now - timedelta(days=7))
    finished_week = week.count()
    failed_week = week.filter(status=JobStatus.FAILED).count()
    waits = [
        (started - created).total_seconds()
        for created, started in GenerationJob.objects.filter(started_at__gte=now - timedelta(hours=1)).values_list(
            "created_at", "started_at"
        )
    ]
    return BusinessNumbers(
        mrr=sum(line.mrr_cents for line in lines.values()) / 100,
        subscribers=sum(line.subscribers for line in lines.values()),
        by_plan=lines,
        new_subscribers=Subscription.objects.filter(created_at__gte=month_start, is_comp=False).count(),
        churned_subscribers=Subscription.objects.filter(
            status=SubscriptionStatus.CANCELED, canceled_at__gte=month_start, is_comp=False
        ).count(),
        tokens_per_day=[(day, (daily.get(day) or {}).get("tokens") or 0) for day in days],
        jobs_per_day=[(day, (daily.get(day) or {}).get("jobs") or 0) for day in days],
        failed_rate=failed_week / finished_week if finished_week else 0.0,
        queue_depth=GenerationJob.objects.filter(status=JobStatus.QUEUED).count(),
        wait_p95_seconds=_p95(waits),
        gpu_hour_cost=settings.GPU_HOUR_COST,
        workspaces=Workspace.objects.count(),
        team_workspaces=Workspace.objects.filter(personal_of__isnull=True).count(),
        team_members=Membership.objects.filter(workspace__personal_of__isnull=True).count(),
        seats_sold=seats_sold,
        seat_mrr=seat_mrr_cents / 100,
    )


def audit_events(*, email_contains: str = "", limit: int = 50):
    """The newest audit events, optionally of one email address (or a part of it)."""
    events = AuditEvent.objects.select_related("actor")
    if email_contains:
        events = events.filter(email__icontains=email_contains)
    return events[:limit]
