from __future__ import annotations

from django.db.models import F

from billing.models import Plan, QueuePriority, QuotaPeriod
from billing.selectors import Entitlements
from saas.errors import QuotaExceeded


def quota_period_open(*, user, entitlements: Entitlements) -> QuotaPeriod:
    """The ledger row of the user's current period, created with the plan's allowance the first
    time it is needed (a new period starts with a fresh allowance exactly once)."""
    period, _ = QuotaPeriod.objects.get_or_create(
        user=user,
        period_start=entitlements.period_start,
        defaults={"period_end": entitlements.period_end, "allowance": entitlements.monthly_token_allowance},
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
            created.append(plan)
    return created
