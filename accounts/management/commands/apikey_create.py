from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from accounts.apikeys import api_key_create
from accounts.models import ApiKeyScope, User


class Command(BaseCommand):
    help = "Create an API key for a user and print it once (only its hash is stored)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--email", required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--read-only", action="store_true")
        parser.add_argument("--expires-in-days", type=int, default=None)

    def handle(self, *args, email: str, name: str, read_only: bool, expires_in_days: int | None, **options) -> None:
        user = User.objects.filter(email__iexact=email).first()
        if user is None:
            raise CommandError(f"No user with the email {email}.")
        _, raw = api_key_create(
            user=user,
            name=name,
            scope=ApiKeyScope.READ if read_only else ApiKeyScope.WRITE,
            expires_in_days=expires_in_days,
        )
        self.stdout.write(raw)
