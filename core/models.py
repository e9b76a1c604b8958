"""What every app shares: the audit log of security and money events."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditAction(models.TextChoices):
    LOGIN = "login", "Signed in"
    LOGIN_FAILED = "login_failed", "Failed sign-in"
    LOGOUT = "logout", "Signed out"
    API_KEY_CREATED = "api_key_created", "API key created"
    API_KEY_REVOKED = "api_key_revoked", "API key revoked"
    PLAN_CHANGED = "plan_changed", "Plan changed"
    TOP_UP = "top_up", "Tokens topped up"
    PLAN_COMPED = "plan_comped", "Plan granted without payment"
    SUSPENDED = "suspended", "Account suspended"
    UNSUSPENDED = "unsuspended", "Account unsuspended"
    WEBHOOK_FAILED = "webhook_failed", "Stripe webhook failed"
    WEBHOOK_REPLAYED = "webhook_replayed", "Stripe webhook replayed"
    ACCOUNT_DELETED = "account_deleted", "Account deleted"
    DUPLICATE_SUBSCRIPTION = "duplicate_subscription", "Second subscription cancelled and refunded"
    WORKSPACE_CREATED = "workspace_created", "Workspace created"
    WORKSPACE_DELETED = "workspace_deleted", "Workspace deleted"
    WORKSPACE_RENAMED = "workspace_renamed", "Workspace renamed"
    MEMBER_INVITED = "member_invited", "Member invited"
    INVITATION_REVOKED = "invitation_revoked", "Invitation revoked"
    MEMBER_ADDED = "member_added", "Member joined"
    MEMBER_ROLE_CHANGED = "member_role_changed", "Member's role changed"
    MEMBER_CAP_SET = "member_cap_set", "Member's token cap set"
    MEMBER_REMOVED = "member_removed", "Member removed"
    OWNERSHIP_TRANSFERRED = "ownership_transferred", "Workspace ownership transferred"
    SEATS_CHANGED = "seats_changed", "Seats changed"
    STAFF_READ_TEXTS = "staff_read_texts", "Staff read a customer's texts"
    DATA_EXPORT_REQUESTED = "data_export_requested", "Data export requested"
    DATA_EXPORT_DOWNLOADED = "data_export_downloaded", "Data export downloaded"
    ENCRYPTION_KEYS_REWRAPPED = "encryption_keys_rewrapped", "Data keys re-wrapped under the newest master key"
    ENCRYPTION_REENCRYPTED = "encryption_reencrypted", "Texts re-encrypted under new data keys"


SECURITY_ACTIONS = (
    AuditAction.LOGIN, AuditAction.LOGIN_FAILED, AuditAction.LOGOUT,
    AuditAction.API_KEY_CREATED, AuditAction.API_KEY_REVOKED, AuditAction.SUSPENDED, AuditAction.UNSUSPENDED,
)  # fmt: skip


class AuditEvent(models.Model):
    """Security and money events: who did what to whom, when, and from where. Append-only."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    action = models.CharField(max_length=32, choices=AuditAction.choices, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="audit_events"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="audit_actions"
    )
    # The workspace the event belongs to, where it belongs to one (sign-ins belong to none).
    workspace = models.ForeignKey(
        "accounts.Workspace", on_delete=models.SET_NULL, null=True, blank=True, related_name="audit_events"
    )
    email = models.CharField(max_length=254, blank=True, help_text="Kept when the user is gone or unknown.")
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]
        db_table = "accounts_auditevent"  # its table from before it moved here

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.action} {self.email}"


class DataKey(models.Model):
    """A workspace's data key, wrapped by a master key from INKWELL_ENCRYPTION_KEYS (core.crypto).

    The newest row of a workspace seals new values; older rows open what they sealed until
    `encryption_rotate --reencrypt` has rewritten it. Deleting the workspace deletes its keys, which
    leaves its texts unreadable wherever copies of them remain (crypto-shredding).
    """

    workspace = models.ForeignKey("accounts.Workspace", on_delete=models.CASCADE, related_name="data_keys")
    master_key_id = models.CharField(max_length=40, db_index=True, help_text="The master key that wraps it.")
    wrapped = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)
    # Set by `encryption_rotate --reencrypt`: no longer seals; deleted once nothing it sealed remains.
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["workspace", "-id"])]

    def __str__(self) -> str:
        return f"data key {self.id} of workspace {self.workspace_id} (wrapped by {self.master_key_id})"
