"""The audit log: one function records, everything else reads."""

from __future__ import annotations

from accounts.models import AuditEvent


def client_ip(request) -> str | None:
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def audit_record(*, action: str, user=None, actor=None, request=None, email: str = "", **detail) -> AuditEvent:
    return AuditEvent.objects.create(
        action=action,
        user=user,
        actor=actor,
        email=email or (user.email if user is not None else ""),
        ip=client_ip(request),
        user_agent=(request.META.get("HTTP_USER_AGENT", "")[:300] if request is not None else ""),
        detail=detail,
    )
