from __future__ import annotations

from allauth.mfa.utils import is_mfa_enabled
from django.conf import settings
from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect
from django.urls import reverse

STAFF_PREFIXES = ("/admin/", "/staff/")


class StaffOnlyAdminMiddleware:
    """A signed-in user who is not staff gets a 404 anywhere under /admin/ (the admin's existence is
    not shown to customers). Staff without two-factor authentication are sent to enrol before the
    admin or the staff pages open, when STAFF_REQUIRE_MFA is on (the production default): a staff
    password alone must not open every customer's data."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if request.path.startswith(STAFF_PREFIXES) and user is not None and user.is_authenticated:
            if request.path.startswith("/admin/") and not user.is_staff:
                raise Http404
            if user.is_staff and settings.STAFF_REQUIRE_MFA and not is_mfa_enabled(user):
                messages.warning(request, "Staff pages need two-factor authentication: set it up to continue.")
                return redirect(f"{reverse('mfa_activate_totp')}?next={request.path}")
        return self.get_response(request)
