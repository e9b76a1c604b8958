from __future__ import annotations

from allauth.account.adapter import DefaultAccountAdapter
from allauth.core import ratelimit
from allauth.core.exceptions import ImmediateHttpResponse
from django.core.exceptions import ValidationError
from django.urls import reverse

from accounts.workspaces import PENDING_INVITATION


class AccountAdapter(DefaultAccountAdapter):
    def get_login_redirect_url(self, request) -> str:
        """Back to an invitation opened while signed out, if there is one."""
        token = request.session.get(PENDING_INVITATION)
        if token:
            return reverse("invitation_accept", args=[token])
        return super().get_login_redirect_url(request)

    def pre_authenticate(self, request, **credentials) -> None:
        """Too many failed sign-ins from one address (or for one email) answer 429 Too Many
        Requests, not a form error with 200: scripts and proxies read the status, not the text."""
        try:
            super().pre_authenticate(request, **credentials)
        except ValidationError as error:
            if getattr(error, "code", None) == "too_many_login_attempts":
                raise ImmediateHttpResponse(ratelimit.respond_429(request)) from error
            raise
