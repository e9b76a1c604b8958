"""Workspaces and who may do what in them: the one place that answers "which workspace is this
request acting in, as whom, and is that allowed".

Every read or write on behalf of a person goes through a ``Membership`` (a user in a workspace,
with a role): a user who is not a member of a workspace gets ``None`` here, which the pages and the
API turn into a 404, so another workspace's existence is never shown.
"""

from __future__ import annotations

import enum
import functools
import secrets

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils.text import slugify

from accounts.apikeys import AuthenticationFailed
from accounts.models import Membership, User, Workspace, WorkspaceRole
from core.errors import ApplicationError

SESSION_KEY = "inkwell_workspace"
# An invitation link opened while signed out: signing in (or up) comes back to it.
PENDING_INVITATION = "inkwell_invitation"


class Permission(enum.StrEnum):
    GENERATE = "generate"  # submit jobs, make and revoke one's own keys, read one's own history
    BILLING = "billing"  # subscribe, change seats and plan, open the Portal
    WORKSPACE_DELETE = "workspace_delete"
    OWNERSHIP_TRANSFER = "ownership_transfer"
    MEMBERS_MANAGE = "members_manage"  # invite, revoke invitations, remove members, change roles
    CAPS_SET = "caps_set"
    KEYS_MANAGE_ALL = "keys_manage_all"  # see and revoke every key of the workspace
    USAGE_ALL = "usage_all"  # every member's usage, not only one's own
    # The workspace's audit trail, staff reading its texts included: the owner's, as the one who
    # answers for the workspace (admins' own actions are in it).
    AUDIT_READ = "audit_read"


ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    WorkspaceRole.OWNER: frozenset(Permission),
    WorkspaceRole.ADMIN: frozenset(
        {
            Permission.GENERATE,
            Permission.MEMBERS_MANAGE,
            Permission.CAPS_SET,
            Permission.KEYS_MANAGE_ALL,
            Permission.USAGE_ALL,
        }
    ),
    WorkspaceRole.MEMBER: frozenset({Permission.GENERATE}),
}

# What a refusal says: who may do it, so the member knows whom to ask.
_WHO = {
    Permission.BILLING: "the workspace's owner",
    Permission.WORKSPACE_DELETE: "the workspace's owner",
    Permission.OWNERSHIP_TRANSFER: "the workspace's owner",
    Permission.MEMBERS_MANAGE: "the workspace's owner and admins",
    Permission.CAPS_SET: "the workspace's owner and admins",
    Permission.KEYS_MANAGE_ALL: "the workspace's owner and admins",
    Permission.USAGE_ALL: "the workspace's owner and admins",
    Permission.AUDIT_READ: "the workspace's owner",
    Permission.GENERATE: "members",
}
_WHAT = {
    Permission.BILLING: "manage billing",
    Permission.WORKSPACE_DELETE: "delete the workspace",
    Permission.OWNERSHIP_TRANSFER: "transfer ownership",
    Permission.MEMBERS_MANAGE: "manage members and invitations",
    Permission.CAPS_SET: "set token caps",
    Permission.KEYS_MANAGE_ALL: "manage other members' API keys",
    Permission.USAGE_ALL: "see other members' usage",
    Permission.AUDIT_READ: "see the workspace's activity",
    Permission.GENERATE: "generate",
}


class NotAllowed(ApplicationError):
    status_code = 403
    error_type = "permission_error"


def role_allows(role: str, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS.get(role, frozenset())


def allows(membership: Membership | None, permission: Permission) -> bool:
    return membership is not None and role_allows(membership.role, permission)


def require(membership: Membership, permission: Permission) -> None:
    """Refuse (403, saying who may) what ``membership``'s role may not do."""
    if not allows(membership, permission):
        raise NotAllowed(
            f"Only {_WHO[permission]} can {_WHAT[permission]} in {membership.workspace.name}; "
            f"your role is {membership.get_role_display().lower()}.",
            code="role_not_allowed",
        )


def slug_unique(name: str) -> str:
    """A URL-safe slug from ``name``, with a short random tail when the plain one is taken."""
    base = slugify(name)[:40].strip("-") or "workspace"
    slug = base
    while Workspace.objects.filter(slug=slug).exists():
        slug = f"{base}-{secrets.token_hex(3)}"
    return slug


def workspace_personal(user: User) -> Workspace:
    """The user's personal workspace, made the first time it is needed (so every way a user comes
    to exist, sign-up, admin, commands, gets one), with the user as its owner."""
    existing = Workspace.objects.filter(personal_of=user).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            workspace = Workspace.objects.create(
                name=f"{user.email} (personal)"[:100], slug=slug_unique(user.email.split("@")[0]), personal_of=user
            )
            Membership.objects.create(workspace=workspace, user=user, role=WorkspaceRole.OWNER)
            return workspace
    except IntegrityError:
        # Made at the same moment by another request of this user.
        return Workspace.objects.get(personal_of=user)


def membership_personal(user: User) -> Membership:
    """The user as owner of their personal workspace."""
    workspace = workspace_personal(user)
    return Membership.objects.select_related("workspace", "user").get(workspace=workspace, user=user)


def membership_in(user: User, workspace: Workspace | int) -> Membership | None:
    """The user's membership of ``workspace``, or None: not a member (treat as not found)."""
    return Membership.objects.select_related("workspace", "user").filter(workspace=workspace, user=user).first()


def membership_of_key(key) -> Membership:
    """The member an API key acts as: its maker, in its workspace. A key whose maker has left the
    workspace is refused (removing a member revokes their keys; this holds even if that failed)."""
    membership = membership_in(key.user, key.workspace_id)
    if membership is None:
        raise AuthenticationFailed(
            "This API key's owner is no longer a member of its workspace.", code="revoked_api_key"
        )
    return membership


def memberships_of(user: User) -> QuerySet[Membership]:
    """The workspaces the user may switch to, personal first (accounts.middleware made the personal
    one on the user's first request)."""
    return (
        Membership.objects.select_related("workspace")
        .filter(user=user)
        .order_by("-workspace__personal_of", "workspace__name")
    )


def members_of(workspace: Workspace) -> QuerySet[Membership]:
    return Membership.objects.select_related("user").filter(workspace=workspace).order_by("created_at")


def workspace_owner(workspace: Workspace) -> User:
    return Membership.objects.select_related("user").get(workspace=workspace, role=WorkspaceRole.OWNER).user


def membership_current(request) -> Membership | None:
    """The membership a signed-in browser acts as: the workspace chosen in the switcher, kept in
    the session, or the personal workspace (also when the chosen one was left or removed)."""
    user = request.user
    if not user.is_authenticated:
        return None
    chosen = request.session.get(SESSION_KEY)
    if chosen is not None:
        membership = membership_in(user, chosen)
        if membership is not None:
            return membership
        request.session.pop(SESSION_KEY, None)
    return membership_personal(user)


def membership_switch(request, workspace_id) -> Membership | None:
    """Make ``workspace_id`` the session's current workspace; None (and no change) unless a member."""
    try:
        workspace_id = int(workspace_id)
    except (TypeError, ValueError):
        return None
    membership = membership_in(request.user, workspace_id)
    if membership is not None:
        request.session[SESSION_KEY] = membership.workspace_id
    return membership


def member_required(permission: Permission | None = None):
    """A page for signed-in members of the current workspace; with ``permission``, only for roles
    that have it (others get a 403 page saying who may)."""

    def decorate(view):
        @login_required
        @functools.wraps(view)
        def wrapped(request, *args, **kwargs):
            if permission is not None:
                try:
                    require(request.membership, permission)
                except NotAllowed as refusal:
                    raise PermissionDenied(refusal.message) from None
            return view(request, *args, **kwargs)

        return wrapped

    return decorate
