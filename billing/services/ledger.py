"""The quota ledger: one row per user and period (QuotaPeriod). Tokens are reserved at submit,
settled when the job ends, granted when a period is paid, and topped up by staff."""

from __future__ import annotations

from django.db import transaction
from django.db.models import F, Sum

from billing.models import Plan, QuotaPeriod, QuotaTopUp
from billing.selectors import Entitlements, entitlements_for
from core.audit import audit_record
from core.errors import ApplicationError, QuotaExceeded
from core.models import AuditAction


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
