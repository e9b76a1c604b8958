"""Start-up refusal: a master key removed from INKWELL_ENCRYPTION_KEYS while it still wraps data
keys would make those workspaces' texts unreadable. Runs with the database checks (``migrate``,
which every deploy and ``make run`` runs, and ``check --database default``)."""

from __future__ import annotations

from django.core.checks import Error, Tags, register
from django.db import DatabaseError


@register(Tags.database)
def master_keys_present(app_configs=None, databases=None, **kwargs):
    if not databases:
        return []
    from core.rotation import master_keys_missing  # imports models: only once checks run

    try:
        missing = master_keys_missing()
    except DatabaseError:  # before the first migration there is nothing to check
        return []
    return [
        Error(
            f"master key {key!r} wraps {count} data keys but is not in INKWELL_ENCRYPTION_KEYS",
            hint="Put it back (after the newest key), run `manage.py encryption_rotate`, then remove it.",
            id="inkwell.E001",
        )
        for key, count in sorted(missing.items())
    ]
