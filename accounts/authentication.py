from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, permissions

from accounts.apikeys import AuthenticationFailed, api_key_authenticate
from accounts.models import ApiKey, ApiKeyScope
from billing.selectors import entitlements_for
from saas.errors import ApplicationError


def refuse_key_in_url(query) -> None:
    """A key in a URL ends up in logs and browser history: refuse it outright."""
    for name, values in query.lists():
        if name.lower() in ("api_key", "apikey", "key", "token") or any(v.startswith("ink_") for v in values):
            raise AuthenticationFailed(
                "Do not put API keys in URLs; send 'Authorization: Bearer ink_...' instead. Revoke a key that was "
                "sent this way.",
                code="api_key_in_url",
            )


def key_from_header(header: str) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("Use 'Authorization: Bearer ink_...'.", code="invalid_api_key")
    return token.strip()


def api_user(raw: str) -> tuple:
    """(user, key) for a raw key, refusing plans without API access. The user carries the
    entitlements just read, so the rest of the request need not read them again."""
    key = api_key_authenticate(raw)
    entitlements = entitlements_for(key.user)
    key.user.request_entitlements = entitlements
    if not entitlements.api_access:
        raise ApplicationError(
            f"Your plan ({entitlements.plan.name}) does not include API access. Upgrade to use your keys.",
            code="api_access_not_in_plan",
            status_code=403,
        )
    return key.user, key


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        refuse_key_in_url(request.query_params)
        raw = key_from_header(request.META.get("HTTP_AUTHORIZATION", ""))
        if raw is None:
            return None
        return api_user(raw)

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="inkwell"'


class PlanAllowsApi(permissions.BasePermission):
    """The API is a plan feature whether the caller uses a key or a signed-in browser session."""

    message = "Your plan does not include API access. Upgrade to use the API."

    def has_permission(self, request, view) -> bool:
        if isinstance(request.auth, ApiKey) or not request.user or not request.user.is_authenticated:
            return True  # keys were checked when they authenticated; anonymous users get 401
        return entitlements_for(request.user).api_access


class KeyScopeAllows(permissions.BasePermission):
    """A read-only key may read; writing needs a read-write key."""

    message = "This API key is read-only; create a read-write key to submit or cancel jobs."

    def has_permission(self, request, view) -> bool:
        key = request.auth
        if isinstance(key, ApiKey) and request.method not in permissions.SAFE_METHODS:
            return key.scope == ApiKeyScope.WRITE
        return True


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes the key: a bearer token."""

    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "ink_..."}
