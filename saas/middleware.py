from __future__ import annotations

from django.http import Http404


class StaffOnlyAdminMiddleware:
    """A signed-in user who is not staff gets a 404 anywhere under /admin/ (the admin's own login
    page stays for signed-out staff). The admin's existence is not shown to customers."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if request.path.startswith("/admin/") and user is not None and user.is_authenticated and not user.is_staff:
            raise Http404
        return self.get_response(request)
