from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from accounts.services import admin_ensure
from billing.services.plans import plans_seed


class Command(BaseCommand):
    help = "Create what a fresh install needs: the admin account (printed once) and the default plans."

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
        for plan in plans_seed(models=list(settings.INFERENCE_MODELS)):
            self.stdout.write(f"Plan created: {plan.name} ({plan.monthly_token_allowance:,} tokens a month)")
