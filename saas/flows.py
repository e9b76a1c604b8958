"""Flows that span apps, each written out in the order its steps must run. The apps below know
nothing of each other's part: closing an account is billing's, inference's, the audit log's and
accounts' work, and only this module says how they fit together."""

from __future__ import annotations

from django.db import transaction

from accounts import teams
from accounts.models import WorkspaceRole
from accounts.services import pseudonym, user_delete, user_suspend, workspace_delete
from accounts.workspaces import members_of
from billing.services.personal_data import billing_personal_data_erase
from billing.services.subscriptions import billing_close
from core.audit import audit_email_replace, audit_record
from core.errors import Conflict
from core.models import AuditAction
from inference.selectors import job_ids_in, job_ids_of
from inference.services import jobs_stop
from inference.streams import streams_delete


def account_delete(*, user) -> None:
    """Close the account, all or nothing as the user sees it.

    0. Refused while the user owns a workspace that has other members: its owner must hand it
       over (or remove them) first, so nobody's team disappears under them.
    1. Stripe first, for every workspace the user owns (the personal one, and teams of one), the
       one step that can fail outside our database: every subscription the customer has in
       Stripe is cancelled and the customer deleted with its cards. If Stripe
       cannot be told, this raises ApplicationError and nothing here has changed.
    2. In one transaction: queued jobs are cancelled and running ones stopped (reservations
       released, delivered text charged as always); the audit log and the stored Stripe events
       lose the email (a pseudonym stands for it); the workspaces they own are deleted, then the
       user with everything theirs.
    3. After the commit, their token streams leave Redis.
    """
    owned = [m.workspace for m in user.memberships.select_related("workspace").filter(role=WorkspaceRole.OWNER)]
    for workspace in owned:
        if members_of(workspace).exclude(user=user).exists():
            raise Conflict(
                f"You own the workspace {workspace.name}, which has other members: transfer its ownership or "
                "remove them before deleting your account.",
                code="workspace_has_members",
            )
    for workspace in owned:
        billing_close(workspace=workspace)
    email = user.email
    job_ids = job_ids_of(user)
    with transaction.atomic():
        jobs_stop(user=user)
        audit_email_replace(user=user, email=email, replacement=pseudonym(email))
        teams.invitations_email_replace(email=email, replacement=pseudonym(email))
        for workspace in owned:
            billing_personal_data_erase(workspace=workspace)
        audit_record(action=AuditAction.ACCOUNT_DELETED, user=None, email=pseudonym(email))
        for workspace in owned:
            workspace_delete(workspace=workspace)
        user_delete(user=user)
        transaction.on_commit(lambda: streams_delete(job_ids), robust=True)


def account_suspend(*, user, reason: str, actor=None) -> None:
    """Suspend: sign-in and keys are refused from now on, then the queued and running jobs stop
    (in that order, so no new job slips in between)."""
    user_suspend(user=user, reason=reason, actor=actor)
    jobs_stop(user=user)


def member_remove(*, membership, actor=None) -> int:
    """Remove a member: first out of the workspace with their keys revoked (so no new job of theirs
    can be admitted: job_submit checks the membership under the ledger lock), then their queued and
    running jobs there stop, settled and charged as a cancel. Their history stays with the
    workspace. Returns how many jobs were asked to stop."""
    teams.member_remove(membership=membership, actor=actor)
    return jobs_stop(user=membership.user, workspace=membership.workspace)


def workspace_close(*, workspace, actor) -> None:
    """Delete a team workspace, all or nothing as its owner sees it, in the order of an account
    deletion: Stripe first (its subscription cancelled, its customer deleted with the cards; if
    Stripe cannot be told, nothing changes), then in one transaction every member's queued and
    running jobs there stop and settle, the stored Stripe events lose their personal fields, and
    the workspace goes with its keys, jobs, ledger and usage; then its token streams leave Redis.
    A personal workspace goes only with its account."""
    if workspace.is_personal:
        raise Conflict(
            "A personal workspace is deleted only with its account (Account > Delete account).",
            code="personal_workspace",
        )
    billing_close(workspace=workspace)
    job_ids = job_ids_in(workspace)
    with transaction.atomic():
        jobs_stop(workspace=workspace)
        billing_personal_data_erase(workspace=workspace)
        audit_record(action=AuditAction.WORKSPACE_DELETED, user=actor, actor=actor, name=workspace.name,
                     slug=workspace.slug)  # fmt: skip
        workspace_delete(workspace=workspace)
        transaction.on_commit(lambda: streams_delete(job_ids), robust=True)
