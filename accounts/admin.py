from __future__ import annotations

from django.contrib import admin

from accounts.apikeys import api_key_revoke
from accounts.models import ApiKey


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "display", "user", "scope", "created_at", "last_used_at", "expires_at", "revoked_at")
    list_filter = ("scope",)
    list_select_related = ("user",)
    search_fields = ("user__email", "name", "prefix")
    readonly_fields = ("user", "prefix", "key_hash", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        return False  # keys are created by their owner (or apikey_create), shown once

    @admin.action(description="Revoke")
    def revoke(self, request, queryset):
        for key in queryset:
            api_key_revoke(key=key, actor=request.user, request=request)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")
