from __future__ import annotations

from allauth.account.decorators import reauthentication_required
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render

from accounts.apikeys import api_key_create, api_key_revoke
from accounts.forms import ApiKeyForm, ProfileForm
from accounts.models import ApiKey
from accounts.workspaces import Permission, allows, member_required
from core.models import SECURITY_ACTIONS


@login_required
def profile(request):
    form = ProfileForm(request.POST or None, instance=request.user)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Profile saved.")
        return redirect("account_profile")
    events = request.user.audit_events.filter(action__in=SECURITY_ACTIONS)[:20]
    return render(request, "accounts/profile.html", {"form": form, "security_events": events})


def _keys_visible(membership):
    """The keys a member sees and may revoke: their own in this workspace; owners and admins see
    every key of the workspace."""
    keys = ApiKey.objects.select_related("user").filter(workspace=membership.workspace)
    return keys if allows(membership, Permission.KEYS_MANAGE_ALL) else keys.filter(user=membership.user)


@member_required()
def api_keys(request):
    """Create and revoke keys; a new key is shown on this response only, never again. A key acts
    as its maker in the current workspace."""
    form = ApiKeyForm(request.POST or None)
    created = None
    if request.method == "POST" and form.is_valid():
        created = _api_key_make(request, form)
        form = ApiKeyForm()
    base_url = request.build_absolute_uri("/").rstrip("/")
    return render(
        request,
        "accounts/api_keys.html",
        {
            "form": form,
            "created": created,
            "keys": _keys_visible(request.membership),
            "all_keys": allows(request.membership, Permission.KEYS_MANAGE_ALL),
            "base_url": base_url,
            "example_model": next(iter(settings.INFERENCE_MODELS)),
        },
    )


@reauthentication_required
def _api_key_make(request, form: ApiKeyForm) -> dict:
    """A key is a credential that outlives the session, so its maker confirms their password first
    (allauth's re-authentication). Asked only once the form is valid: allauth keeps the POST, and
    after the password runs this page again with it, so the new key appears without retyping."""
    key, raw = api_key_create(
        user=request.user,
        workspace=request.membership.workspace,
        name=form.cleaned_data["name"],
        scope=form.cleaned_data["scope"],
        expires_in_days=form.cleaned_data["expires_in_days"],
        request=request,
    )
    return {"key": key, "raw": raw}


@member_required()
def api_key_revoke_view(request, key_id: int):
    if request.method == "POST":
        key = api_key_revoke(
            key=get_object_or_404(_keys_visible(request.membership), pk=key_id), actor=request.user, request=request
        )
        messages.success(request, f"Key {key.name} revoked: requests with it now get 401.")
    return redirect("account_api_keys")
