from __future__ import annotations

import secrets
from dataclasses import dataclass

from allauth.account.models import EmailAddress
from django.db import transaction

from accounts.models import User


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
    from billing.services import subscription_cancel_now
    from inference.models import ACTIVE_STATUSES, GenerationJob
    from inference.services import job_cancel

    for job in GenerationJob.objects.filter(user=user, status__in=ACTIVE_STATUSES):
        job_cancel(job=job)
    subscription_cancel_now(user=user)
    user.delete()
