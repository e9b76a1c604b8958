from __future__ import annotations

import secrets
from dataclasses import dataclass

from allauth.account.models import EmailAddress
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from saas.errors import ApplicationError


@dataclass(frozen=True)
class AdminSeed:
    user: User
    created: bool
    password: str | None  # only when this call generated it, so it can be shown once


@transaction.atomic
def admin_ensure(*, email: str, password: str | None = None) -> AdminSeed:
    """Create the operator's superuser with a verified email, once; later calls change nothing."""
    email = email.strip().lower()
    existing = User.objects.filter(email=email).first()
    if existing is not None:
        return AdminSeed(user=existing, created=False, password=None)
    generated = password is None
    password = password or secrets.token_urlsafe(12)
    user = User.objects.create_superuser(email=email, password=password)
    EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
    return AdminSeed(user=user, created=True, password=password if generated else None)


def account_delete(*, user) -> None:
    """Close the account: stop its jobs (releasing their reservations), cancel the paid
    subscription in Stripe (no further renewals), then delete the user and everything theirs."""
    from accounts.audit import audit_record
    from accounts.models import AuditAction
    from billing.services import subscription_cancel_now
    from inference.models import ACTIVE_STATUSES, GenerationJob
    from inference.services import job_cancel

    for job in GenerationJob.objects.filter(user=user, status__in=ACTIVE_STATUSES):
        job_cancel(job=job)
    subscription_cancel_now(user=user)
    audit_record(action=AuditAction.ACCOUNT_DELETED, user=None, email=user.email)
    user.delete()


def user_suspend(*, user, reason: str, actor=None) -> None:
    """Suspended: cannot sign in (is_active off), keys refused, queued and running jobs stopped."""
    from accounts.audit import audit_record
    from accounts.models import AuditAction
    from inference.models import ACTIVE_STATUSES, GenerationJob
    from inference.services import job_cancel

    if not reason.strip():
        raise ApplicationError("Say why the account is suspended.", param="reason")
    with transaction.atomic():
        type(user).objects.filter(pk=user.pk).update(
            is_active=False, suspended_at=timezone.now(), suspension_reason=reason.strip()
        )
        audit_record(action=AuditAction.SUSPENDED, user=user, actor=actor, reason=reason.strip())
    for job in GenerationJob.objects.filter(user=user, status__in=ACTIVE_STATUSES):
        job_cancel(job=job)
    user.refresh_from_db()


def user_unsuspend(*, user, actor=None) -> None:
    from accounts.audit import audit_record
    from accounts.models import AuditAction

    with transaction.atomic():
        type(user).objects.filter(pk=user.pk).update(is_active=True, suspended_at=None, suspension_reason="")
        audit_record(action=AuditAction.UNSUSPENDED, user=user, actor=actor)
    user.refresh_from_db()
