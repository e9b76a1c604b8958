from __future__ import annotations

from django.contrib import admin

from core.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    # Staff reading a customer's texts is listed here too (action "Staff read a customer's texts",
    # the staff member as actor, the job in the detail), beside what the workspace's owner sees.
    list_display = ("created_at", "action", "email", "actor", "workspace", "ip")
    list_filter = ("action", "created_at")
    list_select_related = ("actor", "workspace")
    search_fields = ("email", "user__email", "actor__email", "workspace__slug", "ip")
    date_hierarchy = "created_at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
