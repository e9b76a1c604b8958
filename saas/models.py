from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from core.fields import SealedBytesField


class ExportScope(models.TextChoices):
    WORKSPACE = "workspace", "Workspace"
    USER = "user", "Your own data"


class ExportStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Preparing"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"
    EXPIRED = "expired", "Expired"


# Being built: one at a time per person, workspace and scope.
ACTIVE_STATUSES = (ExportStatus.QUEUED, ExportStatus.RUNNING)


class DataExport(models.Model):
    """One request for a zip of everything a workspace (or a person) holds, built by a Celery task.

    Moves only forward, by conditional update: queued -> running -> ready -> expired, or failed.
    The archive lives in this row, so any web process can serve what any worker built (no shared
    disk), sealed with the workspace's data key like the texts inside it; it is deleted when the
    link expires (the maintenance chore) or when a newer export of the same kind is ready.
    """

    # `encryption_rotate --reencrypt` holds this many archives (up to ARCHIVE_MAX_BYTES each) at once.
    SEALED_ROTATION_BATCH = 1

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # The workspace exported; for a person's own export, their personal workspace, whose data key
    # seals the archive.
    workspace = models.ForeignKey("accounts.Workspace", on_delete=models.CASCADE, related_name="data_exports")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="data_exports")
    scope = models.CharField(max_length=10, choices=ExportScope.choices)
    status = models.CharField(max_length=10, choices=ExportStatus.choices, default=ExportStatus.QUEUED)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=500, blank=True, help_text="Shown to the person who asked.")
    created_at = models.DateTimeField(auto_now_add=True)
    # When the build under way claimed the row: its writes name it, so a build that lost its claim
    # (swept, or taken over after its worker died) writes nothing.
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    downloaded_at = models.DateTimeField(null=True, blank=True, help_text="The latest download.")
    archive_bytes = models.PositiveBigIntegerField(default=0)
    archive = SealedBytesField(workspace_field="workspace_id", null=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["requested_by", "workspace", "scope", "-created_at"]),
            models.Index(fields=["status", "expires_at"]),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["requested_by", "workspace", "scope"],
                condition=Q(status__in=ACTIVE_STATUSES),
                name="one_export_at_a_time",
            )
        ]

    def __str__(self) -> str:
        return f"{self.scope} export of {self.workspace_id} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES
