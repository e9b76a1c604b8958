from __future__ import annotations

from django.conf import settings

from billing.selectors import entitlements_for, member_snapshot, quota_snapshot


def billing(request) -> dict:
    """The quota meter and the billing banners on every page of a signed-in user: the current
    workspace's pool and, for a member with a cap, their own share of it."""
    context = {"billing_sandbox": settings.BILLING_SANDBOX}
    membership = getattr(request, "membership", None)
    if membership is None:
        return context
    workspace = membership.workspace
    try:
        entitlements = entitlements_for(workspace)
    except Exception:  # no plans seeded yet: the page still renders
        return context
    quota = quota_snapshot(workspace, entitlements=entitlements)
    cap = member_snapshot(workspace, membership.user, entitlements=entitlements, cap=membership.monthly_token_cap)
    if cap is not None:
        context["member_cap"] = {
            "allowance": cap.allowance,
            "used": cap.used,
            "reserved": cap.reserved,
            "remaining": cap.remaining,
            "percent": cap.percent,
        }
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
