from __future__ import annotations

import secrets
from dataclasses import dataclass

from allauth.account.models import EmailAddress
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.crypto import salted_hmac

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


def pseudonym(email: str) -> str:
    """A stable keyed hash that stands for an email address once its account is gone: the same
    address always gives the same pseudonym (staff can follow one person's trail), and it cannot
    be turned back into the address without the server's secret key."""
    return "deleted:" + salted_hmac("inkwell.accounts.pseudonym", email.strip().lower()).hexdigest()[:24]


def account_delete(*, user) -> None:
    """Close the account, all or nothing as the user sees it. Stripe comes first (the one step
    that can fail outside our database): every subscription the customer has in Stripe is
    cancelled and the customer deleted with its cards; if Stripe cannot be told, this raises
    ApplicationError and nothing here has changed. Then, in one transaction: running jobs are
    stopped and queued ones cancelled (reservations released), the user's audit entries and their
    Stripe events lose the email (a pseudonym stands for it), and the user is deleted with
    everything theirs. Last, their token streams leave Redis."""
    from accounts.audit import audit_record
    from accounts.models import AuditAction, AuditEvent
    from billing.models import BillingCustomer
    from billing.services import billing_close, webhook_payloads_scrub
    from inference import streams
    from inference.models import ACTIVE_STATUSES, GenerationJob
    from inference.services import job_cancel

    billing_close(user=user)
    email = user.email
    customer = BillingCustomer.objects.filter(user=user).first()
    job_ids = [str(pk) for pk in GenerationJob.objects.filter(user=user).values_list("pk", flat=True)]
    with transaction.atomic():
        for job in GenerationJob.objects.filter(user=user, status__in=ACTIVE_STATUSES):
            job_cancel(job=job)
        AuditEvent.objects.filter(Q(user=user) | Q(email__iexact=email)).update(email=pseudonym(email))
        if customer is not None:
            webhook_payloads_scrub(customer_id=customer.stripe_customer_id)
        audit_record(action=AuditAction.ACCOUNT_DELETED, user=None, email=pseudonym(email))
        user.delete()
        transaction.on_commit(lambda: _streams_delete(streams, job_ids), robust=True)


def _streams_delete(streams, job_ids: list[str]) -> None:
    if job_ids:
        streams.client().delete(*(streams.stream_key(job_id) for job_id in job_ids))


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
