from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from billing.services import subscriptions_reconcile


class Command(BaseCommand):
    help = "Read every subscription from Stripe and repair local state that differs (lost webhooks). Safe any time."

    def handle(self, *args, **options) -> None:
        if settings.BILLING_SANDBOX:
            raise CommandError("No STRIPE_SECRET_KEY: the billing sandbox has no Stripe account to reconcile with.")
        changes = subscriptions_reconcile()
        for change in changes:
            self.stdout.write(change)
        self.stdout.write(self.style.SUCCESS(f"{len(changes)} subscription(s) changed."))
