from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from core.fields import SealedJSONField, SealedTextField


class Worker(models.Model):
    """A running Celery worker process, as it last reported itself.

    The row is the worker's heartbeat: /healthz counts the fresh ones, and the sweeper takes back
    the jobs of a worker whose heartbeat went stale.
    """

    name = models.CharField(max_length=255, unique=True)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    queues = models.JSONField(default=list)
    started_at = models.DateTimeField()
    last_heartbeat_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return self.name


class JobStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
ACTIVE_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)


class FinishReason(models.TextChoices):
    LENGTH = "length"
    STOP = "stop"
    CANCELLED = "cancelled"
    ERROR = "error"
    TIMEOUT = "timeout"


class JobSource(models.TextChoices):
    WEB = "web"
    API = "api"
    OPENAI = "openai"


class GenerationJob(models.Model):
    """One generation request. Moves only forward, by conditional update:
    queued -> running -> succeeded | failed | cancelled (running -> queued only when its worker died).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # The member who ran it, in the workspace whose pool pays for it. A member's account deleted:
    # their jobs in their personal workspace go with it, those in teams stay, with no user, so the
    # team's numbers still add up.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="generation_jobs"
    )
    workspace = models.ForeignKey("accounts.Workspace", on_delete=models.CASCADE, related_name="generation_jobs")
    source = models.CharField(max_length=10, choices=JobSource.choices, default=JobSource.WEB)
    model = models.CharField(max_length=100)
    # The customer's texts are sealed at rest with the workspace's data key (core.fields): the
    # attributes read and write plaintext, the columns hold AES-256-GCM ciphertext.
    prompt = SealedTextField()
    messages = SealedJSONField(help_text="Chat turns, when the job is a chat.")

    max_new_tokens = models.PositiveIntegerField()
    temperature = models.FloatField(default=1.0)
    top_p = models.FloatField(default=1.0)
    top_k = models.PositiveIntegerField(default=0)
    repetition_penalty = models.FloatField(default=1.0)
    stop = SealedJSONField(default=list)
    seed = models.BigIntegerField(null=True, blank=True)

    status = models.CharField(max_length=12, choices=JobStatus.choices, default=JobStatus.QUEUED, db_index=True)
    finish_reason = models.CharField(max_length=12, choices=FinishReason.choices, blank=True)
    error_message = models.TextField(blank=True, help_text="Shown to the user.")
    output_text = SealedTextField()
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)

    quota_period = models.ForeignKey("billing.QuotaPeriod", on_delete=models.CASCADE, related_name="jobs")
    tokens_reserved = models.PositiveIntegerField()
    tokens_charged = models.PositiveIntegerField(default=0)

    queue = models.CharField(max_length=20)
    plan_slug = models.CharField(max_length=40, help_text="The plan that admitted the job.")
    attempts = models.PositiveSmallIntegerField(default=0)
    worker = models.CharField(max_length=255, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # An API client's Idempotency-Key: a retry with the same key gets the same job.
    idempotency_key = models.CharField(max_length=255, blank=True)
    request_hash = models.CharField(max_length=64, blank=True)
    # The plan's retention erased the texts; the numbers stay.
    texts_erased_at = models.DateTimeField(null=True, blank=True)
    # The user deleted the job: its texts are gone, its numbers stay for usage and billing.
    deleted_at = models.DateTimeField(null=True, blank=True)

    # Not a column: job_submit sets it on a job that it returned again for a repeated Idempotency-Key.
    replayed = False

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "-created_at"]),
            models.Index(fields=["user", "status"]),
            models.Index(fields=["workspace", "status"]),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "user", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="one_job_per_idempotency_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def title(self) -> str:
        """A line to list the job by: its prompt, or the last thing the user said in a chat."""
        if self.texts_erased_at:
            return "(text erased by the retention policy)"
        if self.prompt:
            return self.prompt
        said = [m["content"] for m in self.messages or [] if m.get("role") == "user"]
        return said[-1] if said else "(chat)"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
