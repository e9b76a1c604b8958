"""The customer in the admin: their account, plan and usage in one place, and the operator's
actions on them (top-up, comp, suspend). It spans apps, so it lives in the project shell."""

from __future__ import annotations

from allauth.account.models import EmailAddress
from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.shortcuts import render
from django.urls import reverse
from django.utils.html import format_html

from accounts.models import User
from accounts.services import user_unsuspend
from accounts.workspaces import workspace_personal
from billing.models import Plan
from billing.selectors import entitlements_for, quota_period_for
from billing.services.ledger import quota_top_up
from billing.services.subscriptions import plan_comp
from core.errors import ApplicationError
from saas.flows import account_suspend


class TopUpForm(forms.Form):
    tokens = forms.IntegerField(min_value=1)
    reason = forms.CharField(max_length=300)


class CompForm(forms.Form):
    plan = forms.ModelChoiceField(queryset=Plan.objects.filter(is_active=True))
    days = forms.IntegerField(min_value=1, max_value=3650, initial=30)


class SuspendForm(forms.Form):
    reason = forms.CharField(max_length=300)


def _with_form(form_class, title: str, apply):
    """An admin action that asks for a few fields on an intermediate page, then applies them."""

    def action(modeladmin, request, queryset):
        if "apply" in request.POST:
            form = form_class(request.POST)
            if form.is_valid():
                for user in queryset:
                    try:
                        apply(user=user, actor=request.user, **form.cleaned_data)
                    except ApplicationError as error:
                        modeladmin.message_user(request, f"{user}: {error.message}", messages.ERROR)
                modeladmin.message_user(request, f"{title}: done for {queryset.count()} user(s).")
                return None
        else:
            form = form_class()
        return render(
            request,
            "admin/user_action.html",
            {"title": title, "form": form, "users": queryset, "action": request.POST["action"],
             "opts": modeladmin.model._meta},
        )  # fmt: skip

    action.short_description = title
    action.__name__ = title.lower().replace(" ", "_").replace("…", "")
    return action


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    ordering = ("-date_joined",)
    list_display = ("email", "is_active", "suspended_at", "is_staff", "date_joined", "last_login")
    list_filter = ("is_staff", "is_active", "date_joined")
    search_fields = ("email", "first_name", "last_name")
    readonly_fields = (
        "suspended_at", "suspension_reason", "last_login", "date_joined", "current_plan", "period_usage", "jobs",
    )  # fmt: skip
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Plan and usage", {"fields": ("current_plan", "period_usage", "jobs")}),
        ("Personal info", {"fields": ("first_name", "last_name")}),
        ("Status", {"fields": ("is_active", "suspended_at", "suspension_reason")}),
        ("Permissions", {"fields": ("is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)
    actions = [
        # Top-ups and comps of a user go to their personal workspace; a team's are in the workspace admin.
        _with_form(TopUpForm, "Grant a token top-up…", lambda user, actor, tokens, reason: quota_top_up(
            workspace=workspace_personal(user), tokens=tokens, reason=reason, granted_by=actor)),
        _with_form(CompForm, "Comp a plan…", lambda user, actor, plan, days: plan_comp(
            workspace=workspace_personal(user), plan=plan, days=days, granted_by=actor)),
        _with_form(SuspendForm, "Suspend…", lambda user, actor, reason: account_suspend(
            user=user, reason=reason, actor=actor)),
        "unsuspend",
        "resend_verification",
    ]  # fmt: skip

    @admin.display(description="Plan (personal workspace)")
    def current_plan(self, obj) -> str:
        entitlements = entitlements_for(workspace_personal(obj))
        subscription = entitlements.subscription
        status = (
            f"{subscription.status}{' (comp)' if subscription.is_comp else ''}" if subscription else "no subscription"
        )
        return f"{entitlements.plan.name}: {status}, period ends {entitlements.period_end:%Y-%m-%d}"

    @admin.display(description="This period (personal workspace)")
    def period_usage(self, obj) -> str:
        workspace = workspace_personal(obj)
        entitlements = entitlements_for(workspace)
        period = quota_period_for(workspace, entitlements=entitlements)
        if period is None:
            return f"nothing used of {entitlements.monthly_token_allowance:,}"
        return f"{period.used:,} used + {period.reserved:,} reserved of {period.allowance:,}"

    @admin.display(description="Jobs")
    def jobs(self, obj):
        url = reverse("admin:inference_generationjob_changelist") + f"?user__id__exact={obj.pk}"
        return format_html('<a href="{}">{} jobs</a>', url, obj.generation_jobs.count())

    @admin.action(description="Unsuspend")
    def unsuspend(self, request, queryset):
        for user in queryset:
            user_unsuspend(user=user, actor=request.user)
        self.message_user(request, f"Unsuspended {queryset.count()} user(s).")

    @admin.action(description="Resend the verification email")
    def resend_verification(self, request, queryset):
        sent = 0
        for address in EmailAddress.objects.filter(user__in=queryset, verified=False, primary=True):
            address.send_confirmation(request, signup=False)
            sent += 1
        self.message_user(request, f"Sent {sent} verification email(s); verified users were skipped.")
