from __future__ import annotations

from django.contrib import admin

from inference.models import GenerationJob, Worker


@admin.register(GenerationJob)
class GenerationJobAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "user",
        "model",
        "status",
        "finish_reason",
        "prompt_tokens",
        "completion_tokens",
        "created_at",
    )
    list_filter = ("status", "model", "finish_reason", "source")
    list_select_related = ("user",)
    search_fields = ("user__email", "id")
    raw_id_fields = ("user", "quota_period")
    readonly_fields = ("created_at", "started_at", "finished_at", "enqueued_at")


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    list_display = ("name", "hostname", "pid", "started_at", "last_heartbeat_at")
