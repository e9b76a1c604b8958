from __future__ import annotations

from allauth.account.decorators import reauthentication_required
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import redirect, render

from accounts.forms import DeleteAccountForm
from billing.selectors import public_plans
from core.api import error_body
from core.errors import ApplicationError
from saas.flows import account_delete


def home(request):
    return render(request, "home.html")


def privacy(request):
    return render(request, "privacy.html", {"plans": public_plans()})


@login_required
def delete_account(request):
    form = DeleteAccountForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        return _account_delete_confirmed(request, form)
    return render(request, "accounts/delete.html", {"form": form})


@reauthentication_required
def _account_delete_confirmed(request, form: DeleteAccountForm):
    """The password is asked again (allauth's re-authentication) only once the email typed back is
    right, so a typo is corrected on this page; after the password allauth runs the same POST again
    and the account goes."""
    try:
        account_delete(user=request.user)
    except ApplicationError as error:
        # Nothing was deleted: the user stays signed in and can try again.
        messages.error(request, f"Your account was not deleted. {error.message}")
        return render(request, "accounts/delete.html", {"form": form}, status=error.status_code)
    logout(request)
    messages.success(request, "Your account and its data were deleted, and your subscription was cancelled.")
    return redirect("home")


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
