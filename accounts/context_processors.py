from __future__ import annotations

from accounts.workspaces import Permission, allows, memberships_of


def workspaces(request) -> dict:
    """The workspace switcher: where the signed-in user works now, and where else they may."""
    membership = getattr(request, "membership", None)
    if membership is None:
        return {}
    return {
        "current_membership": membership,
        "workspace_choices": list(memberships_of(request.user)),
        "can_manage_members": allows(membership, Permission.MEMBERS_MANAGE),
        "can_bill": allows(membership, Permission.BILLING),
    }
