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
