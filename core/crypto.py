"""Customers' texts at rest: envelope encryption, in one place.

- Master keys come from the environment (``settings.ENCRYPTION_KEYS``: ``id:base64`` entries, newest
  first). They never touch the database; they only wrap data keys.
- Each workspace has a data key (``core.DataKey``): 32 random bytes, stored wrapped by a master key
  with AES-256-GCM, its associated data naming the workspace and the key's row. Deleting the
  workspace deletes its data keys (crypto-shredding).
- Texts are sealed with AES-256-GCM under the workspace's data key, with a random 96-bit nonce and
  associated data naming the row and the field, so a ciphertext copied to another row, field or
  workspace fails to open.

Sealed value layout: ``b"\\x01" | data key id (8 bytes, big-endian) | nonce (12) | ciphertext+tag``.
The key id in each value lets rows sealed before a re-encryption open until they are rewritten.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import re
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import transaction
from django.dispatch import receiver

VERSION = b"\x01"
_HEADER = struct.Struct(">cQ")  # version byte, data key id
NONCE_BYTES = 12
OVERHEAD = _HEADER.size + NONCE_BYTES + 16
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
_CACHE_SIZE = 4096


class Undecryptable(Exception):
    """A sealed value that cannot be opened: wrong row or field, tampered, or its key destroyed."""


@dataclass(frozen=True)
class MasterKey:
    id: str
    aead: AESGCM


class KeyRing:
    """The master keys, newest first."""

    def __init__(self, spec: str):
        entries = [entry.strip() for entry in (spec or "").split(",") if entry.strip()]
        if not entries:
            raise ImproperlyConfigured(
                "INKWELL_ENCRYPTION_KEYS is empty: set it to one or more id:base64-of-32-bytes entries "
                "(`manage.py encryption_keygen` prints one)"
            )
        self.keys: dict[str, MasterKey] = {}
        for entry in entries:
            key_id, sep, encoded = entry.partition(":")
            if not sep or not _KEY_ID.match(key_id):
                raise ImproperlyConfigured(
                    f"INKWELL_ENCRYPTION_KEYS: {key_id[:40]!r} is not id:base64 (ids are letters, digits, . _ -)"
                )
            try:
                raw = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise ImproperlyConfigured(f"INKWELL_ENCRYPTION_KEYS: key {key_id!r} is not valid base64") from None
            if len(raw) != 32:
                raise ImproperlyConfigured(
                    f"INKWELL_ENCRYPTION_KEYS: key {key_id!r} is {len(raw)} bytes; AES-256 needs 32"
                )
            if key_id in self.keys:
                raise ImproperlyConfigured(f"INKWELL_ENCRYPTION_KEYS: key id {key_id!r} appears twice")
            self.keys[key_id] = MasterKey(key_id, AESGCM(raw))
        self.newest = self.keys[next(iter(self.keys))]

    def get(self, key_id: str) -> MasterKey:
        try:
            return self.keys[key_id]
        except KeyError:
            raise Undecryptable(
                f"master key {key_id!r} is not in INKWELL_ENCRYPTION_KEYS (it still wraps data keys: put it "
                "back, run `manage.py encryption_rotate`, then remove it)"
            ) from None


@functools.cache
def keyring() -> KeyRing:
    return KeyRing(settings.ENCRYPTION_KEYS)


def key_new_entry(key_id: str) -> str:
    """A fresh master key entry for INKWELL_ENCRYPTION_KEYS."""
    if not _KEY_ID.match(key_id):
        raise ValueError("a key id is 1-40 letters, digits, '.', '_' or '-'")
    return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"


# --- Data keys -------------------------------------------------------------------------------------


def _wrap_aad(workspace_id: int, data_key_id: int) -> bytes:
    return f"inkwell/datakey/{workspace_id}/{data_key_id}".encode()


def wrap(master: MasterKey, workspace_id: int, data_key_id: int, secret: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + master.aead.encrypt(nonce, secret, _wrap_aad(workspace_id, data_key_id))


def unwrap(master: MasterKey, workspace_id: int, data_key_id: int, wrapped: bytes) -> bytes:
    try:
        return master.aead.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _wrap_aad(workspace_id, data_key_id))
    except InvalidTag:
        raise Undecryptable(f"data key {data_key_id} does not open with master key {master.id!r}") from None


class _DataKeyCache:
    """Unwrapped data keys by id (bounded), and each workspace's current key id for a short while.

    The current key is cached for ``ENCRYPTION_KEY_CACHE_SECONDS`` only: after a re-encryption makes
    new data keys, every process stops sealing with the old ones within that time.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.by_id: OrderedDict[int, tuple[int, AESGCM]] = OrderedDict()
        self.current: dict[int, tuple[float, int]] = {}
        # Keys created inside a transaction not yet committed: never cached, since a rollback would
        # leave the cache naming a key that does not exist (and values sealed with it lost).
        self.pending: set[int] = set()

    def clear(self) -> None:
        with self.lock:
            self.by_id.clear()
            self.current.clear()
            self.pending.clear()


_cache = _DataKeyCache()


def cache_clear() -> None:
    """Forget every unwrapped key (tests; after shredding in this process)."""
    _cache.clear()


def workspace_forget(workspace_id: int) -> None:
    """Drop a deleted workspace's keys from this process's cache."""
    with _cache.lock:
        for key_id in [key for key, (owner, _) in _cache.by_id.items() if owner == workspace_id]:
            del _cache.by_id[key_id]
        _cache.current.pop(workspace_id, None)


@receiver(setting_changed)
def _settings_changed(*, setting, **kwargs) -> None:
    if setting == "ENCRYPTION_KEYS":
        keyring.cache_clear()
        cache_clear()
    elif setting == "ENCRYPTION_KEY_CACHE_SECONDS":
        cache_clear()


def _remember(data_key_id: int, workspace_id: int, aead: AESGCM) -> None:
    with _cache.lock:
        _cache.by_id[data_key_id] = (workspace_id, aead)
        _cache.by_id.move_to_end(data_key_id)
        while len(_cache.by_id) > _CACHE_SIZE:
            _cache.by_id.popitem(last=False)


def data_key_create(workspace_id: int):
    """A new data key for the workspace, wrapped by the newest master key; it becomes current."""
    from core.models import DataKey  # core.models imports the app registry: not at import time

    master = keyring().newest
    secret = os.urandom(32)
    row = DataKey.objects.create(workspace_id=workspace_id, master_key_id=master.id, wrapped=b"")
    row.wrapped = wrap(master, workspace_id, row.id, secret)
    row.save(update_fields=["wrapped"])
    if transaction.get_connection().in_atomic_block:
        with _cache.lock:
            _cache.pending.add(row.id)
        transaction.on_commit(lambda: _cache.pending.discard(row.id))
        return row
    _remember(row.id, workspace_id, AESGCM(secret))
    with _cache.lock:
        _cache.current[workspace_id] = (time.monotonic(), row.id)
    return row


def data_key_current_id(workspace_id: int) -> int:
    """The id of the key that seals new values of this workspace (created on first use)."""
    from core.models import DataKey  # core.models imports the app registry: not at import time

    now = time.monotonic()
    cached = _cache.current.get(workspace_id)
    if cached and now - cached[0] < settings.ENCRYPTION_KEY_CACHE_SECONDS:
        return cached[1]
    key_id = (
        DataKey.objects.filter(workspace_id=workspace_id, retired_at__isnull=True)
        .order_by("-id")
        .values_list("id", flat=True)
        .first()
    )
    if key_id is None:
        # Two first uses at once make two keys: harmless, each value names the key that sealed it.
        return data_key_create(workspace_id).id
    if key_id not in _cache.pending:
        with _cache.lock:
            _cache.current[workspace_id] = (now, key_id)
    return key_id


def data_key_cached(data_key_id: int) -> bool:
    return data_key_id in _cache.by_id


def data_key_load(data_key_id: int) -> tuple[int, AESGCM]:
    """Read and unwrap a data key (kept in the process's cache): (its workspace id, its cipher)."""
    from core.models import DataKey  # core.models imports the app registry: not at import time

    cached = _cache.by_id.get(data_key_id)
    if cached is not None:
        return cached
    row = DataKey.objects.filter(id=data_key_id).first()
    if row is None:
        raise Undecryptable(f"data key {data_key_id} no longer exists (its workspace was deleted)")
    secret = unwrap(keyring().get(row.master_key_id), row.workspace_id, row.id, bytes(row.wrapped))
    cached = (row.workspace_id, AESGCM(secret))
    if data_key_id not in _cache.pending:
        _remember(data_key_id, *cached)
    return cached


def _aead(data_key_id: int, workspace_id: int) -> AESGCM:
    cached = data_key_load(data_key_id)
    if cached[0] != workspace_id:  # read again: the cache may predate a restored or rebuilt table
        with _cache.lock:
            _cache.by_id.pop(data_key_id, None)
        cached = data_key_load(data_key_id)
    if cached[0] != workspace_id:
        raise Undecryptable(f"data key {data_key_id} belongs to another workspace")
    return cached[1]


# --- Sealing values --------------------------------------------------------------------------------


def aad_prefix(label: str) -> bytes:
    return f"inkwell/{label}/".encode()


def aad_for(label: str, pk, field: str) -> bytes:
    """Associated data binding a value to its place: ``label`` names the table, then the row and field."""
    return aad_prefix(label) + f"{pk}/{field}".encode()


def seal(workspace_id: int, plaintext: bytes, aad: bytes, *, data_key_id: int | None = None) -> bytes:
    key_id = data_key_id if data_key_id is not None else data_key_current_id(workspace_id)
    nonce = os.urandom(NONCE_BYTES)
    header = _HEADER.pack(VERSION, key_id)
    return header + nonce + _aead(key_id, workspace_id).encrypt(nonce, plaintext, header + aad)


def sealed_key_id(sealed: bytes) -> int:
    """The data key a sealed value names (no decryption)."""
    if len(sealed) < OVERHEAD or sealed[:1] != VERSION:
        raise Undecryptable("not a sealed value (unknown format)")
    return _HEADER.unpack_from(sealed)[1]


def open_sealed(workspace_id: int, sealed: bytes, aad: bytes) -> bytes:
    key_id = sealed_key_id(sealed)
    header = sealed[: _HEADER.size]
    nonce = sealed[_HEADER.size : _HEADER.size + NONCE_BYTES]
    try:
        return _aead(key_id, workspace_id).decrypt(nonce, sealed[_HEADER.size + NONCE_BYTES :], header + aad)
    except InvalidTag:
        raise Undecryptable("the value does not open here: tampered, or copied from another row or field") from None


class Opener:
    """Opens many values of one workspace in a row (a scan of its history): each data key is
    looked up once, and each value costs one AES-GCM call and no copies (memoryview slices)."""

    def __init__(self, workspace_id: int):
        self.workspace_id = workspace_id
        self._ciphers: dict[int, AESGCM] = {}

    def open(self, sealed, aad: bytes) -> bytes:
        view = memoryview(sealed)
        if len(view) < OVERHEAD or view[0] != VERSION[0]:
            raise Undecryptable("not a sealed value (unknown format)")
        key_id = int.from_bytes(view[1 : _HEADER.size], "big")
        aead = self._ciphers.get(key_id)
        if aead is None:
            aead = self._ciphers[key_id] = _aead(key_id, self.workspace_id)
        body = _HEADER.size + NONCE_BYTES
        try:
            return aead.decrypt(view[_HEADER.size : body], view[body:], bytes(view[: _HEADER.size]) + aad)
        except InvalidTag:
            raise Undecryptable("the value does not open here: tampered, or copied from another row or field") from None
