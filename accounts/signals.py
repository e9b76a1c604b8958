"""Sign-in events into the audit log (recording only; no rules live here)."""

from __future__ import annotations

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from core.audit import audit_record
from core.models import AuditAction


@receiver(user_logged_in)
def _logged_in(sender, request, user, **kwargs) -> None:
    audit_record(action=AuditAction.LOGIN, user=user, request=request)


@receiver(user_logged_out)
def _logged_out(sender, request, user, **kwargs) -> None:
    if user is not None and user.pk is not None:  # a deleted account's last sign-out is not recorded
        audit_record(action=AuditAction.LOGOUT, user=user, request=request)


@receiver(user_login_failed)
def _login_failed(sender, credentials, request=None, **kwargs) -> None:
    email = str(credentials.get("email") or credentials.get("username") or credentials.get("login") or "")[:254]
    audit_record(action=AuditAction.LOGIN_FAILED, email=email, request=request)
