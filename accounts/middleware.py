from __future__ import annotations

from accounts.workspaces import membership_current


class CurrentWorkspaceMiddleware:
    """``request.membership``: the signed-in user in the workspace they are working in (chosen in
    the switcher, kept in the session; their personal workspace otherwise); None when signed out.
    API requests act in their key's workspace instead (accounts.authentication)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.membership = membership_current(request)
        return self.get_response(request)
