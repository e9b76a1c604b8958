"""Every write on a workspace's people: creating a workspace, adding, re-roling, capping and
removing members, handing over ownership, and invitations.

Seats are the plan's business (billing), which this layer does not import: callers pass the
workspace's seat count in (``seats``), and saas.flows / saas.teams put the two together.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from allauth.account.models import EmailAddress
from django.conf import settings
from django.core import signing
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from accounts.apikeys import api_keys_revoke_member
from accounts.models import Invitation, Membership, User, Workspace, WorkspaceRole
from accounts.workspaces import slug_unique
from core.audit import audit_record
from core.errors import ApplicationError, Conflict, NotFound
from core.models import AuditAction

logger = logging.getLogger(__name__)

INVITATION_SALT = "inkwell.accounts.invitation"
MAX_TOKEN_CAP = 10**12  # far above any plan; keeps the number a number people can read
MAX_WORKSPACE_NAME = 100


def _clean_name(name: str) -> str:
    name = " ".join((name or "").split())
    if not name:
        raise ApplicationError("Give the workspace a name.", param="name")
    if len(name) > MAX_WORKSPACE_NAME:
        raise ApplicationError(f"A workspace name is at most {MAX_WORKSPACE_NAME} characters.", param="name")
    return name


@transaction.atomic
def workspace_create(*, owner: User, name: str) -> Workspace:
    """A new (team) workspace with ``owner`` as its owner and only member, on the default plan."""
    name = _clean_name(name)
    workspace = Workspace.objects.create(name=name, slug=slug_unique(name))
    Membership.objects.create(workspace=workspace, user=owner, role=WorkspaceRole.OWNER)
    audit_record(action=AuditAction.WORKSPACE_CREATED, user=owner, actor=owner, workspace=workspace, name=name)
    return workspace


def workspace_rename(*, workspace: Workspace, name: str, actor=None) -> Workspace:
    before, workspace.name = workspace.name, _clean_name(name)
    if workspace.name != before:
        with transaction.atomic():
            workspace.save(update_fields=["name"])
            audit_record(
                action=AuditAction.WORKSPACE_RENAMED, user=actor, actor=actor, workspace=workspace,
                name_from=before, name_to=workspace.name,
            )  # fmt: skip
    return workspace


def seats_taken(workspace: Workspace) -> tuple[int, int]:
    """(members, open invitations not yet expired): together, the seats in use."""
    members = Membership.objects.filter(workspace=workspace).count()
    pending = Invitation.objects.filter(
        workspace=workspace, accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=timezone.now()
    ).count()
    return members, pending


def _seat_check(workspace: Workspace, seats: int) -> None:
    members, pending = seats_taken(workspace)
    if members + pending >= seats:
        raise Conflict(
            f"All {seats} seat{'s' if seats != 1 else ''} of {workspace.name} are taken ({members} member"
            f"{'s' if members != 1 else ''}, {pending} pending invitation{'s' if pending != 1 else ''}). "
            "The owner can add seats on the billing page, or revoke a pending invitation.",
            code="no_seat_left",
        )


def member_add(*, workspace: Workspace, user: User, role: str, seats: int, actor=None) -> Membership:
    """Put ``user`` in ``workspace`` with ``role`` (operators and accepted invitations), within
    the seats. Adding someone already there changes nothing and returns their membership."""
    if role not in (WorkspaceRole.ADMIN, WorkspaceRole.MEMBER):
        raise ApplicationError("A new member is an admin or a member; ownership is handed over instead.", param="role")
    with transaction.atomic():
        # Seats are counted under the workspace's row lock, so two additions cannot share a seat.
        Workspace.objects.select_for_update().get(pk=workspace.pk)
        existing = Membership.objects.filter(workspace=workspace, user=user).first()
        if existing is not None:
            return existing
        _seat_check(workspace, seats + 1 if _has_open_invitation(workspace, user.email) else seats)
        membership = Membership.objects.create(workspace=workspace, user=user, role=role)
        audit_record(action=AuditAction.MEMBER_ADDED, user=user, actor=actor, workspace=workspace, role=role)
    return membership


def _has_open_invitation(workspace: Workspace, email: str) -> bool:
    return Invitation.objects.filter(
        workspace=workspace, email__iexact=email, accepted_at__isnull=True, revoked_at__isnull=True,
        expires_at__gt=timezone.now(),
    ).exists()  # fmt: skip


def member_role_set(*, membership: Membership, role: str, actor=None) -> Membership:
    if membership.role == WorkspaceRole.OWNER:
        raise ApplicationError("The owner's role changes only by handing ownership to someone else.", param="role")
    if role not in (WorkspaceRole.ADMIN, WorkspaceRole.MEMBER):
        raise ApplicationError("The role must be admin or member.", param="role")
    if membership.role != role:
        Membership.objects.filter(pk=membership.pk).update(role=role)
        audit_record(
            action=AuditAction.MEMBER_ROLE_CHANGED,
            user=membership.user,
            actor=actor,
            workspace=membership.workspace,
            role=role,
        )
    membership.refresh_from_db()
    return membership


def member_cap_parse(value) -> int | None:
    """A cap as people type it: empty for no cap, else a whole number of tokens (commas and
    underscores allowed), 0 to stop a member from spending at all."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = str(value).strip().replace(",", "").replace("_", "")
    if not (text.isascii() and text.isdigit()):  # "²" is a digit to isdigit(), not to int()
        raise ApplicationError(
            f"A cap is a whole number of tokens, like 50000, or empty for no cap; got {str(value)[:40]!r}.",
            param="monthly_token_cap",
        )
    cap = int(text)
    if cap > MAX_TOKEN_CAP:
        raise ApplicationError(
            f"A cap is at most {MAX_TOKEN_CAP:,} tokens; leave it empty for no cap.", param="monthly_token_cap"
        )
    return cap


def member_cap_set(*, membership: Membership, cap: int | None, actor=None) -> Membership:
    """Set (or with None, lift) the member's monthly token cap. It applies to the current period
    at once: what they already spent counts against it."""
    if cap is not None and not 0 <= cap <= MAX_TOKEN_CAP:
        raise ApplicationError(f"A cap is between 0 and {MAX_TOKEN_CAP:,} tokens.", param="monthly_token_cap")
    Membership.objects.filter(pk=membership.pk).update(monthly_token_cap=cap)
    audit_record(
        action=AuditAction.MEMBER_CAP_SET,
        user=membership.user,
        actor=actor,
        workspace=membership.workspace,
        monthly_token_cap=cap,
    )
    membership.refresh_from_db()
    return membership


def member_remove(*, membership: Membership, actor=None) -> int:
    """Take the member out of the workspace and revoke their keys there; their jobs and usage stay
    with the workspace. The owner cannot be removed (hand ownership over first). Returns the
    number of keys revoked. Stopping their running jobs is inference's part (saas.flows)."""
    if membership.role == WorkspaceRole.OWNER:
        raise Conflict(
            "The owner cannot be removed from their workspace; hand ownership to another member first.",
            code="owner_cannot_leave",
        )
    with transaction.atomic():
        revoked = api_keys_revoke_member(user=membership.user, workspace=membership.workspace, actor=actor)
        Membership.objects.filter(pk=membership.pk).delete()
        audit_record(
            action=AuditAction.MEMBER_REMOVED,
            user=membership.user,
            actor=actor,
            workspace=membership.workspace,
            keys_revoked=revoked,
        )
    return revoked


def ownership_transfer(*, workspace: Workspace, to: Membership, actor=None) -> None:
    """Make ``to`` (a member of the workspace) its owner; the old owner becomes an admin. A
    personal workspace stays its person's."""
    if to.workspace_id != workspace.pk:
        raise NotFound("That person is not a member of this workspace.")
    if workspace.is_personal:
        raise ApplicationError(
            "A personal workspace cannot change hands; create a team workspace to share ownership.",
            code="personal_workspace",
        )
    if to.role == WorkspaceRole.OWNER:
        return
    with transaction.atomic():
        Workspace.objects.select_for_update().get(pk=workspace.pk)
        Membership.objects.filter(workspace=workspace, role=WorkspaceRole.OWNER).update(role=WorkspaceRole.ADMIN)
        Membership.objects.filter(pk=to.pk).update(role=WorkspaceRole.OWNER)
        audit_record(action=AuditAction.OWNERSHIP_TRANSFERRED, user=to.user, actor=actor, workspace=workspace)


# --- invitations ---------------------------------------------------------------------------------


def invitation_token(invitation: Invitation) -> str:
    """What the link carries: the invitation's id, signed. It proves the link came from us; the
    row says whether it is still open (single use, expiry, revocation)."""
    return signing.dumps(invitation.pk, salt=INVITATION_SALT)


def invitation_from_token(token: str) -> Invitation:
    try:
        pk = signing.loads(token, salt=INVITATION_SALT, max_age=timedelta(days=settings.INVITATION_DAYS + 1))
    except signing.BadSignature:
        raise NotFound("This invitation link is not valid: ask for a new invitation.") from None
    invitation = Invitation.objects.select_related("workspace", "invited_by").filter(pk=pk).first()
    if invitation is None:
        raise NotFound("This invitation no longer exists: ask for a new invitation.")
    return invitation


def invitation_create(*, workspace: Workspace, email: str, role: str, seats: int, invited_by=None) -> Invitation:
    """Invite ``email`` with ``role``, within the seats (members and open invitations each take
    one). An open invitation to the same address is replaced (its link stops working)."""
    email = (email or "").strip()
    if not email or "@" not in email or len(email) > 254:
        raise ApplicationError("Enter the email address to invite, like ada@example.com.", param="email")
    if role not in (WorkspaceRole.ADMIN, WorkspaceRole.MEMBER):
        raise ApplicationError("Invite someone as an admin or a member.", param="role")
    if Membership.objects.filter(workspace=workspace, user__email__iexact=email).exists():
        raise Conflict(f"{email} is already a member of {workspace.name}.", code="already_member")
    now = timezone.now()
    with transaction.atomic():
        Workspace.objects.select_for_update().get(pk=workspace.pk)
        Invitation.objects.filter(
            workspace=workspace, email__iexact=email, accepted_at__isnull=True, revoked_at__isnull=True
        ).update(revoked_at=now)
        _seat_check(workspace, seats)
        invitation = Invitation.objects.create(
            workspace=workspace,
            email=email,
            role=role,
            invited_by=invited_by,
            expires_at=now + timedelta(days=settings.INVITATION_DAYS),
        )
        audit_record(
            action=AuditAction.MEMBER_INVITED, user=invited_by, actor=invited_by, workspace=workspace,
            email=email, role=role,
        )  # fmt: skip
    return invitation


def invitation_send(*, invitation: Invitation, accept_url: str) -> None:
    """The invitation email, through the configured mail transport."""
    inviter = invitation.invited_by.email if invitation.invited_by else "Inkwell"
    send_mail(
        subject=f"{settings.ACCOUNT_EMAIL_SUBJECT_PREFIX}{inviter} invited you to {invitation.workspace.name}",
        message=(
            f"{inviter} invited you to join the workspace {invitation.workspace.name} on Inkwell as "
            f"{invitation.get_role_display().lower()}.\n\n"
            f"Accept the invitation (sign up or sign in with {invitation.email}):\n{accept_url}\n\n"
            f"The link works once and expires on {invitation.expires_at:%Y-%m-%d %H:%M} UTC. If you did not "
            "expect it, ignore this email.\n"
        ),
        from_email=None,
        recipient_list=[invitation.email],
    )


def invitation_revoke(*, invitation: Invitation, actor=None) -> Invitation:
    if Invitation.objects.filter(pk=invitation.pk, accepted_at__isnull=True, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    ):
        audit_record(
            action=AuditAction.INVITATION_REVOKED, user=None, actor=actor, workspace=invitation.workspace,
            email=invitation.email,
        )  # fmt: skip
    invitation.refresh_from_db()
    return invitation


def invitation_open_error(invitation: Invitation) -> str | None:
    """Why the invitation cannot be accepted any more, or None while it is open."""
    if invitation.accepted_at is not None:
        return "This invitation was already used. Ask the workspace's admins for a new one if you need it."
    if invitation.revoked_at is not None:
        return "This invitation was withdrawn. Ask the workspace's admins for a new one."
    if invitation.expires_at <= timezone.now():
        return "This invitation has expired. Ask the workspace's admins for a new one."
    return None


def invitation_accept(*, invitation: Invitation, user: User, seats: int) -> Membership:
    """``user`` joins the workspace: once, before expiry, unless revoked, and only with the invited
    address verified on their account (a forwarded link is no use to someone else). The seat was
    taken when the invitation was made; it is checked again (``seats`` now), since the owner may
    have removed seats in Stripe's Portal meanwhile."""
    with transaction.atomic():
        Workspace.objects.select_for_update().get(pk=invitation.workspace_id)
        invitation = Invitation.objects.select_for_update().select_related("workspace").get(pk=invitation.pk)
        problem = invitation_open_error(invitation)
        if problem is not None:
            raise Conflict(problem, code="invitation_closed")
        if not EmailAddress.objects.filter(user=user, email__iexact=invitation.email, verified=True).exists():
            raise ApplicationError(
                f"This invitation is for {invitation.email}; you are signed in as {user.email}. Sign in with "
                f"{invitation.email} (or add and verify it under Email addresses) to accept it.",
                code="invitation_email_mismatch",
                status_code=403,
            )
        membership = Membership.objects.filter(workspace=invitation.workspace, user=user).first()
        if membership is None and Membership.objects.filter(workspace=invitation.workspace).count() >= seats:
            raise Conflict(
                f"{invitation.workspace.name} has no free seat right now: ask its owner to add a seat, then open "
                "this link again.",
                code="no_seat_left",
            )
        if membership is None:
            membership = Membership.objects.create(workspace=invitation.workspace, user=user, role=invitation.role)
            audit_record(
                action=AuditAction.MEMBER_ADDED, user=user, actor=user, workspace=invitation.workspace,
                role=invitation.role, invitation=invitation.pk,
            )  # fmt: skip
        Invitation.objects.filter(pk=invitation.pk).update(accepted_at=timezone.now(), accepted_by=user)
    return membership


def invitations_email_replace(*, email: str, replacement: str) -> int:
    """Put ``replacement`` where invitations name ``email`` (its account is being deleted; open
    ones are withdrawn too). Returns how many changed."""
    Invitation.objects.filter(email__iexact=email, accepted_at__isnull=True, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    return Invitation.objects.filter(email__iexact=email).update(email=replacement)


def invitations_open(workspace: Workspace):
    return Invitation.objects.filter(
        workspace=workspace, accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=timezone.now()
    ).select_related("invited_by")
