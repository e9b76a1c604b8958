"""API access is a plan feature: the checks that turn a plan without it into a clear 403."""

from __future__ import annotations

from rest_framework import permissions

from accounts.apikeys import api_key_authenticate
from accounts.models import ApiKey
from accounts.workspaces import membership_of_key
from billing.selectors import Entitlements, entitlements_for
from core.errors import ApplicationError


def api_entitlements(membership) -> Entitlements:
    """The workspace's entitlements, refusing a plan without API access. They are kept on the
    membership for the rest of the request, which need not read them again."""
    entitlements = entitlements_for(membership.workspace)
    if not entitlements.api_access:
        raise ApplicationError(
            f"Your plan ({entitlements.plan.name}) does not include API access. Upgrade to use your keys.",
            code="api_access_not_in_plan",
            status_code=403,
        )
    membership.request_entitlements = entitlements
    return entitlements


def api_member(raw: str) -> tuple:
    """(membership, key) for a raw key whose workspace's plan includes the API (the /v1 views,
    which do not go through DRF's authentication)."""
    key = api_key_authenticate(raw)
    membership = membership_of_key(key)
    api_entitlements(membership)
    return membership, key


class PlanAllowsApi(permissions.BasePermission):
    """The API is a plan feature whether the caller uses a key or a signed-in browser session."""

    message = "Your plan does not include API access. Upgrade to use the API."

    def has_permission(self, request, view) -> bool:
        if not request.user or not request.user.is_authenticated:
            return True  # anonymous callers get 401 from IsAuthenticated
        if isinstance(request.auth, ApiKey):
            api_entitlements(request.membership)  # a key gets the error that names its plan
            return True
        return entitlements_for(request.membership.workspace).api_access
