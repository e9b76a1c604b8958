"""Rotate encryption keys: re-wrap data keys (default), or re-encrypt every text (--reencrypt)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from core import crypto, rotation
from core.audit import audit_record
from core.models import AuditAction


class Command(BaseCommand):
    help = (
        "Re-wrap every workspace data key under the newest master key in INKWELL_ENCRYPTION_KEYS. With "
        "--reencrypt, also give every workspace a new data key and rewrite every sealed text under it "
        "(batches, progress bar; safe while the site runs; interrupted, run it again to resume)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--reencrypt", action="store_true", help="new data keys; rewrite every text")
        parser.add_argument("--batch", type=int, default=500, help="rows per transaction (default 500)")

    def handle(self, *args, reencrypt: bool, batch: int, **options):
        if batch < 1:
            raise CommandError("--batch must be at least 1")
        missing = rotation.master_keys_missing()
        if missing:
            listed = ", ".join(f"{key} ({count} data keys)" for key, count in sorted(missing.items()))
            raise CommandError(
                f"master keys still in use are not in INKWELL_ENCRYPTION_KEYS: {listed}. Put them back "
                "(after the newest), run this command, then remove them."
            )
        newest = crypto.keyring().newest.id
        moved = rotation.data_keys_rewrap()
        audit_record(action=AuditAction.ENCRYPTION_KEYS_REWRAPPED, master_key=newest, data_keys=moved)
        self.stdout.write(f"Re-wrapped {moved} data keys under master key {newest!r}.")
        if not reencrypt:
            self._in_use()
            return

        bars = []

        def progress(model, total):
            bar = tqdm(total=total, desc=model._meta.label, unit="rows", file=self.stdout, leave=True)
            bars.append(bar)
            return bar.update

        report = rotation.reencrypt(batch=batch, progress=progress)
        for bar in bars:
            bar.close()
        audit_record(action=AuditAction.ENCRYPTION_REENCRYPTED, **report)
        self.stdout.write(
            f"Re-encrypted: {report['workspaces']} workspaces got new data keys, {report['rows']} rows "
            f"rewritten, {report['keys_deleted']} old data keys deleted."
        )
        self._in_use()

    def _in_use(self):
        in_use = rotation.master_keys_in_use()
        ring = crypto.keyring().keys
        unused = [key for key in ring if key not in in_use and key != crypto.keyring().newest.id]
        if unused:
            self.stdout.write(f"No data key is wrapped by {', '.join(unused)}: they can leave INKWELL_ENCRYPTION_KEYS.")
