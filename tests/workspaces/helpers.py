"""Helpers of the workspace tests: a browser working in a workspace, jobs run by a member."""

from __future__ import annotations

from django.test import Client

from accounts.models import ApiKey, Invitation, Membership, Workspace
from accounts.workspaces import SESSION_KEY, membership_in
from billing.models import BillingCustomer, MemberQuota, QuotaPeriod, Subscription, UsageRecord
from inference.models import GenerationJob
from inference.outcome import JobOutcome
from inference.services import job_claim, job_finish, job_submit


def membership(user, workspace) -> Membership:
    found = membership_in(user, workspace)
    assert found is not None, f"{user} is not a member of {workspace}"
    return found


def work_in(user, workspace) -> Client:
    """A browser signed in as ``user`` that chose ``workspace`` in the switcher."""
    client = Client()
    client.force_login(user)
    response = client.post("/workspaces/switch/", {"workspace": workspace.pk})
    assert response.status_code == 302, response
    assert client.session[SESSION_KEY] == workspace.pk
    return client


def finished_job(user, workspace, *, prompt: str, text: str, completion_tokens: int = 4) -> GenerationJob:
    """A job ``user`` ran in ``workspace`` through job_submit, then finished as a worker would."""
    job = job_submit(member=membership(user, workspace), prompt=prompt, max_new_tokens=10)
    claimed = job_claim(job_id=job.pk, worker="test")
    job_finish(job=claimed, outcome=JobOutcome(text=text, completion_tokens=completion_tokens, finish_reason="length"))
    return GenerationJob.objects.get(pk=job.pk)


def queued_job(user, workspace, *, prompt: str, max_new_tokens: int = 10) -> GenerationJob:
    return job_submit(member=membership(user, workspace), prompt=prompt, max_new_tokens=max_new_tokens)


def state(*workspaces) -> dict:
    """Everything a request could change in ``workspaces``, to compare before and after: jobs, API
    keys, members, invitations, the ledger and its sub-ledger, subscriptions, Stripe customers,
    usage records."""
    ids = [w.pk for w in workspaces]
    return {
        "jobs": list(
            GenerationJob.objects.filter(workspace_id__in=ids)
            .order_by("pk")
            .values_list(
                "pk",
                "user_id",
                "status",
                "prompt",
                "output_text",
                "deleted_at",
                "cancel_requested_at",
                "tokens_reserved",
                "tokens_charged",
            )
        ),
        "keys": list(
            ApiKey.objects.filter(workspace_id__in=ids)
            .order_by("pk")
            .values_list("pk", "user_id", "workspace_id", "revoked_at")
        ),
        "memberships": list(
            Membership.objects.filter(workspace_id__in=ids)
            .order_by("pk")
            .values_list("pk", "workspace_id", "user_id", "role", "monthly_token_cap")
        ),
        "invitations": list(
            Invitation.objects.filter(workspace_id__in=ids)
            .order_by("pk")
            .values_list("pk", "email", "role", "accepted_at", "revoked_at", "expires_at")
        ),
        "ledger": list(
            QuotaPeriod.objects.filter(workspace_id__in=ids)
            .order_by("pk")
            .values_list("pk", "workspace_id", "allowance", "used", "reserved")
        ),
        "member_ledger": list(
            MemberQuota.objects.filter(quota_period__workspace_id__in=ids)
            .order_by("pk")
            .values_list("pk", "user_id", "used", "reserved")
        ),
        "subscriptions": list(
            Subscription.objects.filter(workspace_id__in=ids)
            .order_by("pk")
            .values_list("pk", "plan_id", "status", "seats", "paid_seats", "cancel_at_period_end")
        ),
        "customers": list(
            BillingCustomer.objects.filter(workspace_id__in=ids).order_by("pk").values_list("pk", "stripe_customer_id")
        ),
        "usage": list(
            UsageRecord.objects.filter(workspace_id__in=ids)
            .order_by("pk")
            .values_list("pk", "user_id", "job_id", "tokens_charged")
        ),
        "workspaces": list(Workspace.objects.filter(pk__in=ids).order_by("pk").values_list("pk", "name", "slug")),
    }
