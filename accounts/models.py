from __future__ import annotations

from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models
from django.db.models.functions import Lower


class UserManager(BaseUserManager):
    use_in_migrations = True

    def _create_user(self, email: str, password: str | None, **extra_fields):
        if not email:
            raise ValueError("An email address is required")
        user = self.model(email=self.normalize_email(email).lower(), **extra_fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra_fields):
        extra_fields.setdefault("is_staff", False)
        extra_fields.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra_fields)

    def create_superuser(self, email: str, password: str | None = None, **extra_fields):
        extra_fields["is_staff"] = True
        extra_fields["is_superuser"] = True
        return self._create_user(email, password, **extra_fields)


class User(AbstractUser):
    """A person who signs in with an email address; there is no username."""

    username = None
    email = models.EmailField("email address", unique=True)
    # Suspended users cannot sign in (is_active is off), use keys, or have jobs run.
    suspended_at = models.DateTimeField(null=True, blank=True)
    suspension_reason = models.CharField(max_length=300, blank=True)

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    objects = UserManager()

    class Meta:
        constraints = [models.UniqueConstraint(Lower("email"), name="accounts_user_email_ci_unique")]

    def __str__(self) -> str:
        return self.email


class ApiKeyScope(models.TextChoices):
    READ = "read", "Read only"
    WRITE = "write", "Read and write"


class ApiKey(models.Model):
    """A developer's key. Only a lookup prefix and a SHA-256 hash are stored, never the key."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    scope = models.CharField(max_length=5, choices=ApiKeyScope.choices, default=ApiKeyScope.WRITE)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} (ink_{self.prefix}…)"

    @property
    def display(self) -> str:
        return f"ink_{self.prefix}…"


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


SECURITY_ACTIONS = (
    AuditAction.LOGIN, AuditAction.LOGIN_FAILED, AuditAction.LOGOUT,
    AuditAction.API_KEY_CREATED, AuditAction.API_KEY_REVOKED, AuditAction.SUSPENDED, AuditAction.UNSUSPENDED,
)  # fmt: skip


class AuditEvent(models.Model):
    """Security and money events: who did what to whom, when, and from where. Append-only."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    action = models.CharField(max_length=32, choices=AuditAction.choices, db_index=True)
    user = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="audit_events")
    actor = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="audit_actions")
    email = models.CharField(max_length=254, blank=True, help_text="Kept when the user is gone or unknown.")
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.action} {self.email}"
