from __future__ import annotations

from django.contrib import admin

from accounts.apikeys import api_key_revoke
from accounts.models import ApiKey, Invitation, Membership


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = (
        "name", "display", "user", "workspace", "scope", "created_at", "last_used_at", "expires_at", "revoked_at",
    )  # fmt: skip
    list_filter = ("scope",)
    list_select_related = ("user", "workspace")
    search_fields = ("user__email", "name", "prefix", "workspace__slug")
    # The workspace too: a key moved to another workspace would act there without its maker being a member.
    readonly_fields = ("user", "workspace", "prefix", "key_hash", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        return False  # keys are created by their owner (or apikey_create), shown once

    @admin.action(description="Revoke")
    def revoke(self, request, queryset):
        for key in queryset:
            api_key_revoke(key=key, actor=request.user, request=request)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")


class ReadOnlyAdmin(admin.ModelAdmin):
    """For looking up, not writing: the writes go through accounts.teams (the members page, or
    `manage.py workspace_admin`), which check seats and roles and keep the audit log."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Membership)
class MembershipAdmin(ReadOnlyAdmin):
    list_display = ("user", "workspace", "role", "monthly_token_cap", "created_at")
    list_filter = ("role",)
    list_select_related = ("user", "workspace")
    search_fields = ("user__email", "workspace__slug", "workspace__name")


@admin.register(Invitation)
class InvitationAdmin(ReadOnlyAdmin):
    list_display = ("email", "workspace", "role", "invited_by", "created_at", "expires_at", "accepted_at", "revoked_at")
    list_select_related = ("workspace", "invited_by")
    search_fields = ("email", "workspace__slug", "workspace__name")
