from __future__ import annotations

from django.contrib import admin, messages

from core.audit import audit_record
from core.models import AuditAction
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
    # bypass the ledger (a reservation never released). Stop a job with the Cancel action. The
    # customer's texts are shown, never edited, and only on a job's own page (each view of it is
    # an audit event the workspace's owner sees); the list shows none.
    readonly_fields = (
        "prompt", "messages", "stop", "output_text",
        "status", "finish_reason", "error_message", "prompt_tokens", "completion_tokens", "quota_period",
        "tokens_reserved", "tokens_charged", "queue", "plan_slug", "attempts", "worker", "cancel_requested_at",
        "created_at", "enqueued_at", "started_at", "finished_at", "idempotency_key", "request_hash",
        "texts_erased_at", "deleted_at", "user", "workspace", "source", "model",
    )  # fmt: skip
    actions = ["cancel"]

    def has_add_permission(self, request) -> bool:
        return False  # jobs are submitted through job_submit, which reserves their tokens

    def has_delete_permission(self, request, obj=None) -> bool:
        # Deleting the row would skip settling its reservation and erase a usage trail: a job is
        # cancelled (the action), and its texts erased by its owner or the retention policy.
        return False

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """A job's page shows its prompt and output: each time it is shown, the staff member who
        read them is recorded in the workspace's audit trail."""
        response = super().change_view(request, object_id, form_url, extra_context)
        job = (getattr(response, "context_data", None) or {}).get("original")
        if job is not None and response.status_code == 200:
            audit_record(
                action=AuditAction.STAFF_READ_TEXTS,
                user=job.user,
                actor=request.user,
                workspace=job.workspace,
                request=request,
                job=str(job.pk),
            )
        return response

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
