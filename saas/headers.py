"""Browser security headers that neither Django nor django-csp sets."""

from __future__ import annotations

from django.conf import settings


def permissions_policy_header(features: dict[str, list[str]]) -> str:
    """``{"camera": []}`` -> ``camera=()``: the header's structured-field form, where an empty list
    turns the feature off for this page and every frame in it."""
    return ", ".join(f"{feature}=({' '.join(allowed)})" for feature, allowed in features.items())


class PermissionsPolicyMiddleware:
    """Turns off the browser features Inkwell never uses (camera, microphone, payment...), so a
    script that got in somehow cannot reach them either. The list is PERMISSIONS_POLICY."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.header = permissions_policy_header(settings.PERMISSIONS_POLICY)

    def __call__(self, request):
        response = self.get_response(request)
        if self.header:
            response.setdefault("Permissions-Policy", self.header)
        return response
