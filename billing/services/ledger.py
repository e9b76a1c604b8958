"""The quota ledger: one row per workspace and period (QuotaPeriod, the pool its members share),
and under it one row per member (MemberQuota, checked against the member's cap). Tokens are
reserved at submit, settled when the job ends, granted when a period is paid, and topped up by
staff."""

from __future__ import annotations

from django.db import transaction
from django.db.models import F, Sum

from billing.models import MemberQuota, Plan, QuotaPeriod, QuotaTopUp
from billing.selectors import Entitlements, entitlements_for, pool_allowance
from core.audit import audit_record
from core.errors import ApplicationError, QuotaExceeded
from core.models import AuditAction


def quota_period_open(*, workspace, entitlements: Entitlements) -> QuotaPeriod:
    """The ledger row of the workspace's current period, created the first time it is needed with the
    allowance the period has earned (``Entitlements.opening_allowance``): Free's and a comp's at
    once, a Stripe period's only once its invoice is paid."""
    period, _ = QuotaPeriod.objects.get_or_create(
        workspace=workspace,
        period_start=entitlements.period_start,
        defaults={"period_end": entitlements.period_end, "allowance": entitlements.opening_allowance},
    )
    return period


def quota_reserve(*, period: QuotaPeriod, tokens: int, user, cap: int | None = None) -> None:
    """Reserve ``tokens`` in the pool and in ``user``'s sub-ledger, each with one conditional
    UPDATE: the pool's succeeds only while the allowance still covers them, the member's only while
    their ``cap`` (None: no cap) does, so concurrent submits from any number of processes can
    overspend neither. Callers hold the period's row lock (job_submit does); the two updates are one
    savepoint, so a refusal by either leaves both as they were."""
    with transaction.atomic():
        _reserve(period=period, tokens=tokens, user=user, cap=cap)


def _reserve(*, period: QuotaPeriod, tokens: int, user, cap: int | None) -> None:
    member, _ = MemberQuota.objects.get_or_create(quota_period=period, user=user)
    members = MemberQuota.objects.filter(pk=member.pk)
    if cap is not None and not members.filter(used__lte=cap - tokens - F("reserved")).update(
        reserved=F("reserved") + tokens
    ):
        member.refresh_from_db()
        left = max(0, cap - member.used - member.reserved)
        raise QuotaExceeded(
            f"Your monthly cap in this workspace is reached: this request needs up to {tokens:,} tokens "
            f"(prompt + max_new_tokens) and {left:,} of your {cap:,}-token cap remain until the reset on "
            f"{period.period_end:%Y-%m-%d %H:%M} UTC. Lower max_new_tokens, or ask a workspace admin to raise "
            "your cap.",
            code="member_cap_exceeded",
            extra={"tokens_remaining": left, "resets_at": period.period_end.isoformat(), "limit": "member_cap"},
        )
    reserved = QuotaPeriod.objects.filter(pk=period.pk, allowance__gte=F("used") + F("reserved") + tokens).update(
        reserved=F("reserved") + tokens
    )
    if reserved:
        if cap is None:
            members.update(reserved=F("reserved") + tokens)
        return
    period.refresh_from_db()
    raise QuotaExceeded(
        f"Not enough tokens left in this workspace's pool this period: this request needs up to {tokens:,} tokens "
        f"(prompt + max_new_tokens) and {period.remaining:,} remain until the reset on "
        f"{period.period_end:%Y-%m-%d %H:%M} UTC. Lower max_new_tokens, shorten the prompt, or upgrade the plan.",
        code="insufficient_quota",
        extra={"tokens_remaining": period.remaining, "resets_at": period.period_end.isoformat(), "limit": "pool"},
    )


def quota_settle(*, period_id: int, user_id: int, reserved: int, charged: int) -> None:
    """Release a job's reservation and charge what it actually processed, in the pool and in the
    member's sub-ledger. Callers run this in the same transaction as the job's one final status
    change, which is what makes it exactly once."""
    if not 0 <= charged <= reserved:
        raise ValueError(f"cannot charge {charged} tokens against a reservation of {reserved}")
    QuotaPeriod.objects.filter(pk=period_id).update(reserved=F("reserved") - reserved, used=F("used") + charged)
    MemberQuota.objects.filter(quota_period_id=period_id, user_id=user_id).update(
        reserved=F("reserved") - reserved, used=F("used") + charged
    )


def quota_period_grant(*, workspace, period_start, period_end, plan: Plan, seats: int = 1) -> QuotaPeriod:
    """A paid period's ledger row, with the allowance it was paid for: the plan's pool for the
    paid ``seats`` plus the period's top-ups (recomputed, never added to, so a replayed invoice
    grants nothing more and an upgrade keeps the top-ups)."""
    period, _ = QuotaPeriod.objects.get_or_create(
        workspace=workspace, period_start=period_start, defaults={"period_end": period_end, "allowance": 0}
    )
    top_ups = QuotaTopUp.objects.filter(quota_period=period).aggregate(total=Sum("tokens"))["total"] or 0
    QuotaPeriod.objects.filter(pk=period.pk).update(allowance=pool_allowance(plan, seats) + top_ups)
    period.refresh_from_db()
    return period


def quota_top_up(*, workspace, tokens: int, reason: str, granted_by=None) -> QuotaTopUp:
    """Raise the workspace's current allowance by ``tokens``, once, with a reason, in the audit log."""

    if tokens <= 0:
        raise ApplicationError("A top-up must add at least one token.", param="tokens")
    if not reason.strip():
        raise ApplicationError("Say why the tokens are granted.", param="reason")
    entitlements = entitlements_for(workspace)
    with transaction.atomic():
        period = quota_period_open(workspace=workspace, entitlements=entitlements)
        top_up = QuotaTopUp.objects.create(
            workspace=workspace, quota_period=period, tokens=tokens, reason=reason.strip(), granted_by=granted_by
        )
        QuotaPeriod.objects.filter(pk=period.pk).update(allowance=F("allowance") + tokens)
        audit_record(
            action=AuditAction.TOP_UP,
            user=workspace.personal_of,
            workspace=workspace,
            actor=granted_by,
            tokens=tokens,
            reason=reason.strip(),
        )
    return top_up
