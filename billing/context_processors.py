from __future__ import annotations

from django.conf import settings

from billing.selectors import entitlements_for, quota_snapshot


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
    quota = quota_snapshot(user, entitlements=entitlements)
    context["quota"] = {
        "plan": entitlements.plan,
        "api_access": entitlements.api_access,
        "allowance": quota.allowance,
        "used": quota.used,
        "reserved": quota.reserved,
        "remaining": quota.remaining,
        "percent": quota.percent,
        "resets_at": entitlements.period_end,
        "in_grace": entitlements.in_grace,
        "grace_ends_at": entitlements.grace_ends_at,
    }
    return context
