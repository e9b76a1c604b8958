"""The audit log: one function records, everything else reads."""

from __future__ import annotations

from django.db.models import Q

from core.models import AuditEvent


def client_ip(request) -> str | None:
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def audit_record(
    *, action: str, user=None, actor=None, workspace=None, request=None, email: str = "", **detail
) -> AuditEvent:
    return AuditEvent.objects.create(
        action=action,
        user=user,
        workspace=workspace,
        actor=actor,
        email=email or (user.email if user is not None else ""),
        ip=client_ip(request),
        user_agent=(request.META.get("HTTP_USER_AGENT", "")[:300] if request is not None else ""),
        detail=detail,
    )


def audit_email_replace(*, user, email: str, replacement: str) -> int:
    """Put ``replacement`` where the audit log names ``user`` or ``email`` (an account being
    deleted keeps its trail under a pseudonym). Returns how many events changed."""
    return AuditEvent.objects.filter(Q(user=user) | Q(email__iexact=email)).update(email=replacement)
