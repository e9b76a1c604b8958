from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render

from accounts.forms import DeleteAccountForm, ProfileForm
from accounts.services import account_delete


@login_required
def profile(request):
    form = ProfileForm(request.POST or None, instance=request.user)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Profile saved.")
        return redirect("account_profile")
    return render(request, "accounts/profile.html", {"form": form})


@login_required
def delete_account(request):
    form = DeleteAccountForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        user = request.user
        logout(request)
        account_delete(user=user)
        messages.success(request, "Your account and its data were deleted, and your subscription was cancelled.")
        return redirect("home")
    return render(request, "accounts/delete.html", {"form": form})
