from __future__ import annotations

from django.contrib import admin, messages

from inference.models import ACTIVE_STATUSES, GenerationJob, Worker
from inference.services import job_cancel


@admin.register(GenerationJob)
class GenerationJobAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "user",
        "workspace",
        "model",
        "status",
        "finish_reason",
        "prompt_tokens",
        "completion_tokens",
        "created_at",
    )
    list_filter = ("status", "model", "finish_reason", "source")
    list_select_related = ("user", "workspace")
    search_fields = ("user__email", "workspace__slug", "id")
    raw_id_fields = ("user", "workspace", "quota_period")
    # Everything a service moves is read-only here: a status or a count edited by hand would
    # bypass the ledger (a reservation never released). Stop a job with the Cancel action.
    readonly_fields = (
        "status", "finish_reason", "error_message", "prompt_tokens", "completion_tokens", "quota_period",
        "tokens_reserved", "tokens_charged", "queue", "plan_slug", "attempts", "worker", "cancel_requested_at",
        "created_at", "enqueued_at", "started_at", "finished_at", "idempotency_key", "request_hash",
        "texts_erased_at", "deleted_at", "user", "workspace", "source", "model",
    )  # fmt: skip
    actions = ["cancel"]

    def has_add_permission(self, request) -> bool:
        return False  # jobs are submitted through job_submit, which reserves their tokens

    @admin.action(description="Cancel (queued: at once, released; running: stops at its next token)")
    def cancel(self, request, queryset):
        cancelled = 0
        for job in queryset.filter(status__in=ACTIVE_STATUSES):
            job_cancel(job=job)
            cancelled += 1
        self.message_user(request, f"Cancel requested for {cancelled} job(s).", messages.SUCCESS)


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    list_display = ("name", "hostname", "pid", "started_at", "last_heartbeat_at")
