from __future__ import annotations

from django.conf import settings

from billing.selectors import entitlements_for, quota_period_for


def billing(request) -> dict:
    """The quota meter and the billing banners on every page of a signed-in user."""
    context = {"billing_sandbox": settings.BILLING_SANDBOX}
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return context
    try:
        entitlements = entitlements_for(user)
    except Exception:  # no plans seeded yet: the page still renders
        return context
    period = quota_period_for(user, entitlements=entitlements)
    allowance = period.allowance if period else entitlements.monthly_token_allowance
    used = period.used if period else 0
    reserved = period.reserved if period else 0
    percent = min(100, round(100 * (used + reserved) / allowance)) if allowance else 100
    context["quota"] = {
        "plan": entitlements.plan,
        "allowance": allowance,
        "used": used,
        "reserved": reserved,
        "remaining": max(0, allowance - used - reserved),
        "percent": percent,
        "resets_at": entitlements.period_end,
        "in_grace": entitlements.in_grace,
        "grace_ends_at": entitlements.grace_ends_at,
    }
    return context
