"""Flows that span apps, each written out in the order its steps must run. The apps below know
nothing of each other's part: closing an account is billing's, inference's, the audit log's and
accounts' work, and only this module says how they fit together."""

from __future__ import annotations

from django.db import transaction

from accounts.services import pseudonym, user_delete, user_suspend
from billing.services.personal_data import billing_personal_data_erase
from billing.services.subscriptions import billing_close
from core.audit import audit_email_replace, audit_record
from core.models import AuditAction
from inference.selectors import job_ids_of
from inference.services import jobs_stop
from inference.streams import streams_delete


def account_delete(*, user) -> None:
    """Close the account, all or nothing as the user sees it.

    1. Stripe first, the one step that can fail outside our database: every subscription the
       customer has in Stripe is cancelled and the customer deleted with its cards. If Stripe
       cannot be told, this raises ApplicationError and nothing here has changed.
    2. In one transaction: queued jobs are cancelled and running ones stopped (reservations
       released, delivered text charged as always); the audit log and the stored Stripe events
       lose the email (a pseudonym stands for it); the user is deleted with everything theirs.
    3. After the commit, their token streams leave Redis.
    """
    billing_close(user=user)
    email = user.email
    job_ids = job_ids_of(user)
    with transaction.atomic():
        jobs_stop(user=user)
        audit_email_replace(user=user, email=email, replacement=pseudonym(email))
        billing_personal_data_erase(user=user)
        audit_record(action=AuditAction.ACCOUNT_DELETED, user=None, email=pseudonym(email))
        user_delete(user=user)
        transaction.on_commit(lambda: streams_delete(job_ids), robust=True)


def account_suspend(*, user, reason: str, actor=None) -> None:
    """Suspend: sign-in and keys are refused from now on, then the queued and running jobs stop
    (in that order, so no new job slips in between)."""
    user_suspend(user=user, reason=reason, actor=actor)
    jobs_stop(user=user)
