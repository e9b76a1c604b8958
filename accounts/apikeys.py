"""API keys: ``ink_`` + 40 random base62 characters + a 6-character checksum.

The first 12 random characters are the lookup prefix; the checksum lets a mistyped or made-up key
be refused before any database lookup. The database keeps the prefix and a SHA-256 of the key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import zlib
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from accounts.models import ApiKey, ApiKeyScope
from core.audit import audit_record
from core.errors import ApplicationError
from core.models import AuditAction

ALPHABET = string.digits + string.ascii_letters
PREFIX = "ink_"
BODY_LENGTH = 40
LOOKUP_LENGTH = 12
CHECKSUM_LENGTH = 6
LAST_USED_RESOLUTION = timedelta(minutes=1)


class AuthenticationFailed(ApplicationError):
    status_code = 401
    error_type = "authentication_error"


def _base62(number: int, length: int) -> str:
    digits = []
    for _ in range(length):
        number, remainder = divmod(number, 62)
        digits.append(ALPHABET[remainder])
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), CHECKSUM_LENGTH)


def key_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def looks_valid(raw: str) -> bool:
    """Format and checksum only: no database."""
    if not raw.startswith(PREFIX) or len(raw) != len(PREFIX) + BODY_LENGTH + CHECKSUM_LENGTH:
        return False
    body, checksum = raw[len(PREFIX) : -CHECKSUM_LENGTH], raw[-CHECKSUM_LENGTH:]
    return all(c in ALPHABET for c in body) and hmac.compare_digest(_checksum(body), checksum)


def api_key_create(
    *, user, workspace, name: str, scope: str = ApiKeyScope.WRITE, expires_in_days: int | None = None, request=None
):
    """A key that acts as ``user`` in ``workspace`` (of which they are a member). Returns (key row,
    the full key). The full key exists only in this return value."""
    if not name.strip():
        raise ApplicationError("Give the key a name, so you can tell your keys apart.", param="name")
    if scope not in ApiKeyScope.values:
        raise ApplicationError("The scope must be read or write.", param="scope")
    body = "".join(secrets.choice(ALPHABET) for _ in range(BODY_LENGTH))
    raw = PREFIX + body + _checksum(body)
    expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
    key = ApiKey.objects.create(
        user=user,
        workspace=workspace,
        name=name.strip()[:100],
        prefix=body[:LOOKUP_LENGTH],
        key_hash=key_hash(raw),
        scope=scope,
        expires_at=expires_at,
    )
    audit_record(
        action=AuditAction.API_KEY_CREATED,
        user=user,
        actor=user,
        workspace=workspace,
        request=request,
        key=key.display,
    )
    return key, raw


def api_keys_revoke_member(*, user, workspace, actor=None) -> int:
    """Revoke every live key ``user`` made in ``workspace`` (they were removed from it)."""
    keys = list(ApiKey.objects.filter(user=user, workspace=workspace, revoked_at__isnull=True))
    for key in keys:
        api_key_revoke(key=key, actor=actor)
    return len(keys)


def api_key_revoke(*, key: ApiKey, actor=None, request=None) -> ApiKey:
    if ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now()):
        audit_record(
            action=AuditAction.API_KEY_REVOKED,
            user=key.user,
            actor=actor,
            workspace=key.workspace,
            request=request,
            key=key.display,
        )
    key.refresh_from_db()
    return key


def api_key_authenticate(raw: str) -> ApiKey:
    """The live key for ``raw``, or AuthenticationFailed saying why."""
    if not looks_valid(raw):
        raise AuthenticationFailed("This is not an Inkwell API key (they start with ink_).", code="invalid_api_key")
    key = (
        ApiKey.objects.select_related("user", "workspace")
        .filter(prefix=raw[len(PREFIX) : len(PREFIX) + LOOKUP_LENGTH])
        .first()
    )
    if key is None or not hmac.compare_digest(key.key_hash, key_hash(raw)):
        raise AuthenticationFailed("Unknown API key.", code="invalid_api_key")
    now = timezone.now()
    if key.revoked_at is not None:
        raise AuthenticationFailed("This API key was revoked.", code="revoked_api_key")
    if key.expires_at is not None and key.expires_at <= now:
        raise AuthenticationFailed("This API key has expired; create a new one.", code="expired_api_key")
    if not key.user.is_active:
        raise AuthenticationFailed("This account is disabled.", code="account_disabled")
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        with transaction.atomic():
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
    return key
