"""The customer in the admin: their account (or their team's workspace), plan and usage in one
place, and the operator's actions on them (top-up, comp, suspend). It spans apps, so it lives in
the project shell."""

from __future__ import annotations

from allauth.account.models import EmailAddress
from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import Count
from django.shortcuts import render
from django.urls import reverse
from django.utils.html import format_html

from accounts import teams
from accounts.models import Invitation, Membership, User, Workspace
from accounts.services import user_unsuspend
from accounts.workspaces import workspace_personal
from billing.models import Plan
from billing.selectors import entitlements_for, quota_period_for, seats_for, seats_of
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


class WorkspaceCompForm(CompForm):
    seats = forms.IntegerField(min_value=1, max_value=10_000, initial=1, help_text="Counts on a per-seat plan only.")


class SuspendForm(forms.Form):
    reason = forms.CharField(max_length=300)


def _with_form(form_class, title: str, apply):
    """An admin action that asks for a few fields on an intermediate page, then applies them to
    each selected row: ``apply(row, actor=..., **fields)``."""

    def action(modeladmin, request, queryset):
        noun = modeladmin.model._meta.verbose_name
        if "apply" in request.POST:
            form = form_class(request.POST)
            if form.is_valid():
                for obj in queryset:
                    try:
                        apply(obj, actor=request.user, **form.cleaned_data)
                    except ApplicationError as error:
                        modeladmin.message_user(request, f"{obj}: {error.message}", messages.ERROR)
                modeladmin.message_user(request, f"{title}: done for {queryset.count()} {noun}(s).")
                return None
        else:
            form = form_class()
        return render(
            request,
            "admin/user_action.html",
            {"title": title, "form": form, "objects": queryset, "action": request.POST["action"],
             "opts": modeladmin.model._meta},
        )  # fmt: skip

    action.short_description = title
    action.__name__ = title.lower().replace(" ", "_").replace("…", "")
    return action


def _period_usage(workspace: Workspace) -> str:
    entitlements = entitlements_for(workspace)
    period = quota_period_for(workspace, entitlements=entitlements)
    if period is None:
        return f"nothing used of {entitlements.monthly_token_allowance:,}"
    return f"{period.used:,} used + {period.reserved:,} reserved of {period.allowance:,}"


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
        return _period_usage(workspace_personal(obj))

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


class _ReadOnlyInline(admin.TabularInline):
    """Shown, never written here: roles, caps, removals and invitations go through accounts.teams
    (the members page, or `manage.py workspace_admin`), which check seats and keep the audit log."""

    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class MembershipInline(_ReadOnlyInline):
    model = Membership
    fields = readonly_fields = ("user", "role", "monthly_token_cap", "created_at")


class InvitationInline(_ReadOnlyInline):
    model = Invitation
    fields = readonly_fields = ("email", "role", "invited_by", "created_at", "expires_at", "accepted_at", "revoked_at")


class WorkspaceKindFilter(admin.SimpleListFilter):
    title = "kind"
    parameter_name = "kind"

    def lookups(self, request, model_admin):
        return (("team", "Team"), ("personal", "Personal"))

    def queryset(self, request, queryset):
        if self.value() in ("team", "personal"):
            return queryset.filter(personal_of__isnull=self.value() == "team")
        return queryset


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    """A workspace, its plan, seats, members and invitations. Only the name is edited here (through
    the rename service); tokens and plans are granted with the actions, which go through billing's
    services; deleting a workspace is the owner's (its Stripe subscription must be cancelled first)."""

    list_display = ("name", "slug", "personal_of", "member_count", "created_at")
    list_select_related = ("personal_of",)
    list_filter = (WorkspaceKindFilter, "created_at")
    search_fields = ("slug", "name", "memberships__user__email")
    fields = ("name", "slug", "personal_of", "created_at", "current_plan", "seats", "period_usage")
    readonly_fields = ("slug", "personal_of", "created_at", "current_plan", "seats", "period_usage")
    inlines = (MembershipInline, InvitationInline)
    actions = [
        _with_form(TopUpForm, "Grant a token top-up…", lambda workspace, actor, tokens, reason: quota_top_up(
            workspace=workspace, tokens=tokens, reason=reason, granted_by=actor)),
        _with_form(WorkspaceCompForm, "Comp a plan…", lambda workspace, actor, plan, days, seats: plan_comp(
            workspace=workspace, plan=plan, days=days, seats=seats, granted_by=actor)),
    ]  # fmt: skip

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(member_count=Count("memberships", distinct=True))

    def has_add_permission(self, request) -> bool:
        return False  # made by their owner (or on a user's first visit, for a personal one)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change) -> None:
        try:
            teams.workspace_rename(workspace=obj, name=form.cleaned_data["name"], actor=request.user)
        except ApplicationError as error:
            self.message_user(request, error.message, messages.ERROR)

    @admin.display(description="Members", ordering="member_count")
    def member_count(self, obj) -> int:
        return obj.member_count

    @admin.display(description="Plan")
    def current_plan(self, obj) -> str:
        entitlements = entitlements_for(obj)
        subscription = entitlements.subscription
        status = (
            f"{subscription.status}{' (comp)' if subscription.is_comp else ''}" if subscription else "no subscription"
        )
        return f"{entitlements.plan.name}: {status}, period ends {entitlements.period_end:%Y-%m-%d}"

    @admin.display(description="Seats")
    def seats(self, obj) -> str:
        entitlements = entitlements_for(obj)
        members, pending = teams.seats_taken(obj)
        return (
            f"{seats_for(obj, entitlements=entitlements)} to fill ({seats_of(entitlements.subscription)} paid): "
            f"{members} member(s), {pending} open invitation(s)"
        )

    @admin.display(description="This period")
    def period_usage(self, obj) -> str:
        return _period_usage(obj)
