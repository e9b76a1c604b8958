from __future__ import annotations

from django.http import JsonResponse
from django.shortcuts import render

from saas.api import error_body


def home(request):
    return render(request, "home.html")


def privacy(request):
    from billing.selectors import public_plans

    return render(request, "privacy.html", {"plans": public_plans()})


API_PREFIXES = ("/api/", "/v1/")


def not_found(request, exception=None):
    """404: the API's JSON envelope under /api/ and /v1/, the site's page elsewhere."""
    if request.path.startswith(API_PREFIXES):
        body = error_body("Not found.", type="not_found_error", code="not_found")
        return JsonResponse(body, status=404)
    return render(request, "404.html", status=404)


def server_error(request):
    if request.path.startswith(API_PREFIXES):
        body = error_body("Something went wrong on our side.", type="server_error", code="server_error")
        return JsonResponse(body, status=500)
    return render(request, "500.html", status=500)
