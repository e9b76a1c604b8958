from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, permissions

from accounts.apikeys import AuthenticationFailed, api_key_authenticate
from accounts.models import ApiKey, ApiKeyScope
from accounts.workspaces import membership_of_key


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


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """A key signs in its maker and puts the request in the key's workspace: ``request.membership``
    (set for signed-in browsers by accounts.middleware) becomes the key's member for the rest of
    the request, so a key never acts in another workspace, whatever the session chose."""

    def authenticate(self, request):
        refuse_key_in_url(request.query_params)
        raw = key_from_header(request.META.get("HTTP_AUTHORIZATION", ""))
        if raw is None:
            return None
        key = api_key_authenticate(raw)
        request._request.membership = membership_of_key(key)
        return key.user, key

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="inkwell"'


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
