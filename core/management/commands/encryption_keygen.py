"""Print a new master key entry for INKWELL_ENCRYPTION_KEYS."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from core import crypto


class Command(BaseCommand):
    help = "Print a new id:base64 master key entry: put it first in INKWELL_ENCRYPTION_KEYS, then encryption_rotate."

    def add_arguments(self, parser):
        parser.add_argument("--id", default="", help="the key's id (default: today's date, like k20261130)")

    def handle(self, *args, id: str, **options):
        try:
            self.stdout.write(crypto.key_new_entry(id or f"k{timezone.now():%Y%m%d}"))
        except ValueError as exc:
            raise CommandError(str(exc)) from None
