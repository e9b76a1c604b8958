from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from accounts.services import admin_ensure


class Command(BaseCommand):
    help = "Create what a fresh install needs: the operator's admin account (printed once)."

    def handle(self, *args, **options) -> None:
        seed = admin_ensure(email=settings.ADMIN_EMAIL, password=settings.ADMIN_PASSWORD)
        if seed.created and seed.password:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Admin account created: {seed.user.email} / {seed.password}\n"
                    "  (shown this once; sign in at /admin/ and change it)"
                )
            )
        elif seed.created:
            self.stdout.write(self.style.SUCCESS(f"Admin account created: {seed.user.email}"))
