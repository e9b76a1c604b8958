"""Plans are data: the default Free, Pro and Team, and each paid plan's product and price at the
payment provider (billing.gateway)."""

from __future__ import annotations

from billing.gateway import billing_gateway
from billing.models import Plan, QueuePriority

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
        # Per seat: $99 and 15M tokens a month for each seat; the workspace's pool is the sum.
        "per_seat": True,
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


def plan_stripe_sync(*, plan: Plan) -> Plan:
    """Create or update the plan's Stripe Product and Price (the sandbox makes up a price id)."""
    if plan.price_cents == 0:
        return plan
    billing_gateway().plan_price_sync(plan=plan)
    Plan.objects.filter(pk=plan.pk).update(
        stripe_product_id=plan.stripe_product_id,
        stripe_price_id=plan.stripe_price_id,
        stripe_price_cents=plan.stripe_price_cents,
        stripe_price_currency=plan.stripe_price_currency,
    )
    return plan
