"""Key rotation (``manage.py encryption_rotate``).

- Re-wrap: every data key wrapped by an older master key is wrapped again by the newest one. Fast
  (one row per workspace), and afterwards the older master keys can leave INKWELL_ENCRYPTION_KEYS.
- Re-encrypt: every workspace gets a new data key and its old ones are retired (they stop sealing);
  each table with sealed fields is rewritten in batches, the values sealed by a retired key sealed
  again by the current one; once nothing sealed by a retired key remains, retired keys are deleted.
  A batch is one transaction holding its rows' locks, so a worker saving the same row waits and
  then writes on top. Interrupted, it resumes: a workspace that has retired keys is mid-way and
  gets no new key; rows already moved are skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max
from django.utils import timezone

from core import crypto
from core.fields import sealed_fields, sealed_models, sealed_reseal, sealed_update_many
from core.models import DataKey


def master_keys_in_use() -> dict[str, int]:
    """Master key id -> how many data keys it wraps."""
    rows = DataKey.objects.values("master_key_id").annotate(keys=Count("id")).order_by()
    return {row["master_key_id"]: row["keys"] for row in rows}


def master_keys_missing() -> dict[str, int]:
    """Master keys that still wrap data keys but are not in INKWELL_ENCRYPTION_KEYS."""
    ring = crypto.keyring().keys
    return {key_id: count for key_id, count in master_keys_in_use().items() if key_id not in ring}


def data_keys_rewrap() -> int:
    """Wrap every data key under the newest master key. Returns how many moved."""
    newest = crypto.keyring().newest
    moved = 0
    for row in DataKey.objects.exclude(master_key_id=newest.id).iterator(chunk_size=500):
        secret = crypto.unwrap(crypto.keyring().get(row.master_key_id), row.workspace_id, row.id, bytes(row.wrapped))
        moved += DataKey.objects.filter(pk=row.pk, master_key_id=row.master_key_id).update(
            master_key_id=newest.id, wrapped=crypto.wrap(newest, row.workspace_id, row.id, secret)
        )
    return moved


def data_keys_retire() -> int:
    """Start a re-encryption: each workspace's keys stop sealing and a new key takes over. A
    workspace that already has retired keys is mid-way and is left as it is. Returns how many
    workspaces got a new key."""
    now = timezone.now()
    started = 0
    for workspace_id in DataKey.objects.values_list("workspace_id", flat=True).distinct().order_by():
        with transaction.atomic():
            keys = DataKey.objects.select_for_update().filter(workspace_id=workspace_id)
            if any(key.retired_at for key in keys):
                continue
            keys.update(retired_at=now)
            crypto.data_key_create(workspace_id)
            started += 1
    crypto.cache_clear()
    return started


def retired_key_ids() -> set[int]:
    return set(DataKey.objects.filter(retired_at__isnull=False).values_list("id", flat=True))


def _pages(model, batch: int):
    last = None
    while True:
        page = model._base_manager.order_by("pk").values_list("pk", flat=True)
        if last is not None:
            page = page.filter(pk__gt=last)
        pks = list(page[:batch])
        if not pks:
            return
        yield pks
        last = pks[-1]


def rows_reseal(model, *, retired: set[int], batch: int = 500, advance: Callable[[int], None] = lambda n: None) -> int:
    """Seal again, under the current keys, every value of ``model`` sealed by a ``retired`` key.
    Returns how many rows were rewritten."""
    fields = sealed_fields(model)
    names = [field.name for field in fields]
    workspace_column = fields[0].workspace_field
    # A model whose rows are large (export archives) says how many to hold in memory at once.
    batch = min(batch, getattr(model, "SEALED_ROTATION_BATCH", batch))
    rewritten = 0
    for pks in _pages(model, batch):
        with transaction.atomic():
            rows = (
                model._base_manager.select_for_update()
                .filter(pk__in=pks)
                .values_list("pk", workspace_column, *names)
                .order_by()
            )
            updates = {}
            for pk, workspace_id, *raws in rows:
                if any(raw is not None and crypto.sealed_key_id(raw) in retired for raw in raws):
                    updates[pk] = {
                        name: sealed_reseal(model, name, pk=pk, workspace_id=workspace_id, raw=raw)
                        for name, raw in zip(names, raws, strict=True)
                    }
            sealed_update_many(model, updates)
        rewritten += len(updates)
        advance(len(pks))
    return rewritten


def keys_still_sealing(models, retired: set[int]) -> set[int]:
    """The retired keys that some stored value still names."""
    used: set[int] = set()
    for model in models:
        names = [field.name for field in sealed_fields(model)]
        for raws in model._base_manager.values_list(*names).order_by().iterator(chunk_size=2000):
            used.update(key for raw in raws if raw is not None and (key := crypto.sealed_key_id(raw)) in retired)
    return used


def reencrypt(*, batch: int = 500, progress=None, clock=time.time, sleep=time.sleep) -> dict:
    """The whole re-encryption, resumable. ``progress(model, total)`` returns an ``advance(n)``
    callable (the command's progress bar). Returns what it did."""
    report = {"workspaces": data_keys_retire(), "rows": 0, "keys_deleted": 0}
    models = sealed_models()
    # Other processes may seal with a retired key until their cached current key expires.
    newest_retirement = DataKey.objects.aggregate(at=Max("retired_at"))["at"]
    settled_at = (newest_retirement.timestamp() if newest_retirement else 0) + settings.ENCRYPTION_KEY_CACHE_SECONDS
    while True:
        retired = retired_key_ids()
        if not retired:
            return report
        started = clock()
        for model in models:
            advance = progress(model, model._base_manager.count()) if progress else (lambda n: None)
            report["rows"] += rows_reseal(model, retired=retired, batch=batch, advance=advance)
        if started < settled_at:
            sleep(max(0.0, settled_at - clock()))
            continue  # a pass that began inside the window proves nothing: once more
        still = keys_still_sealing(models, retired)
        deleted, _ = DataKey.objects.filter(id__in=retired - still).delete()
        report["keys_deleted"] += deleted
        crypto.cache_clear()
        if not still:
            return report
