"""The workspace pages: the switcher, a new workspace, the members page (members, roles, caps,
usage this period, invitations), the workspace's activity (its audit trail) and accepting an
invitation.

These pages sit here because they join three apps: people (accounts), seats (billing) and usage
(inference). Who may do what is accounts.workspaces' rule; each view names the permission it needs.
"""

from __future__ import annotations

from allauth.account.decorators import reauthentication_required
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from accounts import teams
from accounts.models import Invitation, Membership, Workspace, WorkspaceRole
from accounts.workspaces import (
    PENDING_INVITATION,
    SESSION_KEY,
    Permission,
    allows,
    member_required,
    members_of,
    membership_switch,
)
from billing.selectors import entitlements_for, member_usage_this_period, seats_for
from core.errors import ApplicationError
from core.models import AuditAction, AuditEvent
from saas.flows import member_remove, workspace_close


def _back(request, fallback: str):
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return redirect(target)
    return redirect(fallback)


@login_required
@require_POST
def workspace_switch(request):
    """Work in another of one's workspaces (kept in the session). Not a member: 404, no change."""
    membership = membership_switch(request, request.POST.get("workspace"))
    if membership is None:
        raise Http404("No such workspace.")
    messages.info(request, f"You are now working in {membership.workspace.name}.")
    return _back(request, "inference:generate")


@login_required
def workspace_new(request):
    error = None
    name = request.POST.get("name", "") if request.method == "POST" else ""
    if request.method == "POST":
        try:
            workspace = teams.workspace_create(owner=request.user, name=name)
        except ApplicationError as refusal:
            error = refusal.message
        else:
            request.session[SESSION_KEY] = workspace.pk
            messages.success(
                request,
                f"Workspace {workspace.name} created. It has no tokens until it is subscribed: subscribe it to the "
                "Team plan to buy seats and its token pool, then invite people.",
            )
            return redirect("workspace_members")
    return render(request, "saas/workspace_new.html", {"name": name, "error": error}, status=400 if error else 200)


def _target(request, membership_id) -> Membership:
    """A member of the current workspace (404 for anyone else's)."""
    return get_object_or_404(
        Membership.objects.select_related("user", "workspace"),
        pk=membership_id,
        workspace=request.membership.workspace,
    )


@member_required(Permission.MEMBERS_MANAGE)
def members(request):
    membership = request.membership
    workspace = membership.workspace
    entitlements = entitlements_for(workspace)
    used = member_usage_this_period(workspace, entitlements=entitlements)
    seats = seats_for(workspace, entitlements=entitlements)
    taken, pending = teams.seats_taken(workspace)
    rows = [
        {"membership": m, "used": used.get(m.user_id, 0), "is_me": m.user_id == request.user.pk}
        for m in members_of(workspace)
    ]
    return render(
        request,
        "saas/members.html",
        {
            "workspace": workspace,
            "rows": rows,
            "invitations": teams.invitations_open(workspace),
            "seats": seats,
            "seats_taken": taken + pending,
            "per_seat": entitlements.plan.per_seat,
            "entitlements": entitlements,
            "roles": [(WorkspaceRole.ADMIN, "Admin"), (WorkspaceRole.MEMBER, "Member")],
            "is_owner": allows(membership, Permission.OWNERSHIP_TRANSFER),
            "can_bill": allows(membership, Permission.BILLING),
            "can_audit": allows(membership, Permission.AUDIT_READ),
        },
    )


ACTIVITY_PAGE_SIZE = 50


@member_required(Permission.AUDIT_READ)
def activity(request):
    """The workspace's audit trail, newest first: what its people did, what Inkwell did to it, and
    every time Inkwell staff read one of its texts. Only this workspace's events, by construction."""
    events = (
        AuditEvent.objects.filter(workspace=request.membership.workspace)
        .select_related("actor")
        .order_by("-created_at", "-pk")
    )
    page = Paginator(events, ACTIVITY_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "saas/activity.html",
        {"workspace": request.membership.workspace, "page": page, "staff_read": AuditAction.STAFF_READ_TEXTS},
    )


def _owner_only(request, message: str) -> None:
    """Admins manage members; what touches the owner or other admins is the owner's alone."""
    if not allows(request.membership, Permission.OWNERSHIP_TRANSFER):
        raise PermissionDenied(message)


def _done(request, message: str | None = None, error: ApplicationError | None = None):
    if error is not None:
        messages.error(request, error.message)
    elif message:
        messages.success(request, message)
    return redirect("workspace_members")


@member_required(Permission.MEMBERS_MANAGE)
@require_POST
def member_invite(request):
    workspace = request.membership.workspace
    role = request.POST.get("role", WorkspaceRole.MEMBER)
    if role == WorkspaceRole.ADMIN:
        _owner_only(request, "Only the workspace's owner can make admins, by invitation too.")
    try:
        invitation = teams.invitation_create(
            workspace=workspace,
            email=request.POST.get("email", ""),
            role=role,
            seats=seats_for(workspace),
            invited_by=request.user,
        )
    except ApplicationError as error:
        return _done(request, error=error)
    link = request.build_absolute_uri(reverse("invitation_accept", args=[teams.invitation_token(invitation)]))
    teams.invitation_send(invitation=invitation, accept_url=link)
    return _done(
        request,
        f"Invitation sent to {invitation.email}; the link works once, until {invitation.expires_at:%Y-%m-%d} UTC.",
    )


@member_required(Permission.MEMBERS_MANAGE)
@require_POST
def invitation_revoke(request, invitation_id: int):
    invitation = get_object_or_404(Invitation, pk=invitation_id, workspace=request.membership.workspace)
    teams.invitation_revoke(invitation=invitation, actor=request.user)
    return _done(request, f"The invitation to {invitation.email} was withdrawn; its link no longer works.")


@member_required(Permission.MEMBERS_MANAGE)
@require_POST
def member_remove_view(request, membership_id: int):
    target = _target(request, membership_id)
    if target.role == WorkspaceRole.ADMIN:
        _owner_only(request, "Only the workspace's owner can remove an admin.")
    try:
        stopped = member_remove(membership=target, actor=request.user)
    except ApplicationError as error:
        return _done(request, error=error)
    tail = f" and {stopped} running job{'s' if stopped != 1 else ''} stopped" if stopped else ""
    return _done(request, f"{target.user.email} was removed; their API keys here were revoked{tail}.")


@member_required(Permission.MEMBERS_MANAGE)
@require_POST
def member_role(request, membership_id: int):
    target = _target(request, membership_id)
    if target.role == WorkspaceRole.ADMIN or request.POST.get("role") == WorkspaceRole.ADMIN:
        _owner_only(request, "Only the workspace's owner can make or unmake admins.")
    try:
        teams.member_role_set(membership=target, role=request.POST.get("role", ""), actor=request.user)
    except ApplicationError as error:
        return _done(request, error=error)
    return _done(request, f"{target.user.email} is now {target.get_role_display().lower()}.")


@member_required(Permission.CAPS_SET)
@require_POST
def member_cap(request, membership_id: int):
    target = _target(request, membership_id)
    if target.role != WorkspaceRole.MEMBER and target.user_id != request.user.pk:
        # An admin caps members (and themselves); the owner caps anyone.
        _owner_only(request, "Only the workspace's owner can cap the owner or another admin.")
    try:
        cap = teams.member_cap_parse(request.POST.get("monthly_token_cap"))
        teams.member_cap_set(membership=target, cap=cap, actor=request.user)
    except ApplicationError as error:
        return _done(request, error=error)
    if cap is None:
        return _done(request, f"{target.user.email} has no cap now: only the workspace's pool limits them.")
    return _done(request, f"{target.user.email} may spend up to {cap:,} tokens a period.")


@member_required(Permission.OWNERSHIP_TRANSFER)
@require_POST
def ownership_transfer(request, membership_id: int):
    target = _target(request, membership_id)
    try:
        teams.ownership_transfer(workspace=request.membership.workspace, to=target, actor=request.user)
    except ApplicationError as error:
        return _done(request, error=error)
    return _done(request, f"{target.user.email} now owns {target.workspace.name}; you are an admin.")


@member_required(Permission.WORKSPACE_DELETE)
@require_POST
def workspace_delete_view(request):
    """Delete the current (team) workspace; its name typed back confirms it."""
    workspace = request.membership.workspace
    if request.POST.get("confirm", "").strip() != workspace.name:
        messages.error(request, f"Type the workspace's name, {workspace.name}, to delete it. Nothing was deleted.")
        return redirect("workspace_members")
    return _workspace_close_confirmed(request, workspace)


@reauthentication_required
def _workspace_close_confirmed(request, workspace: Workspace):
    """The owner's password is asked again (allauth's re-authentication) once the name typed back
    is right; after it, allauth runs the same POST again and the workspace goes."""
    try:
        workspace_close(workspace=workspace, actor=request.user)
    except ApplicationError as error:
        messages.error(request, f"{workspace.name} was not deleted. {error.message}")
        return redirect("workspace_members")
    request.session.pop(SESSION_KEY, None)
    messages.success(request, f"{workspace.name} was deleted, its subscription cancelled and its data erased.")
    return redirect("inference:generate")


def invitation_accept(request, token: str):
    """The link in the invitation email. Signed out: sign up or sign in first (the invitation
    waits in the session and the sign-in comes back here). Signed in: accept, and work there."""
    try:
        invitation = teams.invitation_from_token(token)
    except ApplicationError as error:
        return render(request, "saas/invitation.html", {"problem": error.message}, status=404)
    problem = teams.invitation_open_error(invitation)
    context = {"invitation": invitation, "problem": problem, "token": token}
    if problem is not None:
        request.session.pop(PENDING_INVITATION, None)
        return render(request, "saas/invitation.html", context, status=410)
    if not request.user.is_authenticated:
        request.session[PENDING_INVITATION] = token
        return render(request, "saas/invitation.html", context)
    if request.method == "POST":
        try:
            membership = teams.invitation_accept(
                invitation=invitation, user=request.user, seats=seats_for(invitation.workspace)
            )
        except ApplicationError as error:
            context["problem"] = error.message
            return render(request, "saas/invitation.html", context, status=error.status_code)
        request.session.pop(PENDING_INVITATION, None)
        request.session[SESSION_KEY] = membership.workspace_id
        messages.success(request, f"Welcome to {membership.workspace.name}. You are working there now.")
        return redirect("inference:generate")
    return render(request, "saas/invitation.html", context)
