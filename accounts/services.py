from __future__ import annotations

import secrets
from dataclasses import dataclass

from allauth.account.models import EmailAddress
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac

from accounts.models import User
from core import crypto
from core.audit import audit_record
from core.errors import ApplicationError
from core.models import AuditAction


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


def pseudonym(email: str) -> str:
    """A stable keyed hash that stands for an email address once its account is gone: the same
    address always gives the same pseudonym (staff can follow one person's trail), and it cannot
    be turned back into the address without the server's secret key."""
    return "deleted:" + salted_hmac("inkwell.accounts.pseudonym", email.strip().lower()).hexdigest()[:24]


def user_delete(*, user) -> None:
    """The user's row and everything that cascades from it. Part of the account-deletion flow
    (saas.flows.account_delete), which first stops and settles what other apps hold."""
    user.delete()


def workspace_delete(*, workspace) -> None:
    """The workspace's row and everything that cascades from it (its ledger, keys, jobs, usage and
    its data keys: whatever copies of its texts remain can no longer be opened). Part of flows
    that first settle what other apps hold (saas.flows)."""
    workspace_id = workspace.pk
    workspace.delete()
    transaction.on_commit(lambda: crypto.workspace_forget(workspace_id))


def user_suspend(*, user, reason: str, actor=None) -> None:
    """Suspended: cannot sign in (is_active off), so keys are refused too. The suspension flow
    (saas.flows.user_suspend) also stops the user's jobs."""
    if not reason.strip():
        raise ApplicationError("Say why the account is suspended.", param="reason")
    with transaction.atomic():
        type(user).objects.filter(pk=user.pk).update(
            is_active=False, suspended_at=timezone.now(), suspension_reason=reason.strip()
        )
        audit_record(action=AuditAction.SUSPENDED, user=user, actor=actor, reason=reason.strip())
    user.refresh_from_db()


def user_unsuspend(*, user, actor=None) -> None:
    with transaction.atomic():
        type(user).objects.filter(pk=user.pk).update(is_active=True, suspended_at=None, suspension_reason="")
        audit_record(action=AuditAction.UNSUSPENDED, user=user, actor=actor)
    user.refresh_from_db()
