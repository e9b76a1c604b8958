from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from billing.services.webhooks import subscriptions_reconcile


class Command(BaseCommand):
    help = "Read every subscription from Stripe and repair local state that differs (lost webhooks). Safe any time."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="report what would change; write nothing")

    def handle(self, *args, **options) -> None:
        if settings.BILLING_SANDBOX:
            raise CommandError("No STRIPE_SECRET_KEY: the billing sandbox has no Stripe account to reconcile with.")
        report = subscriptions_reconcile(dry_run=options["dry_run"])
        for line in report.changed:
            self.stdout.write(line)
        for line in report.skipped:
            self.stderr.write(line)
        verb = "would change" if options["dry_run"] else "changed"
        self.stdout.write(
            self.style.SUCCESS(
                f"{report.checked} subscription(s) checked, {len(report.changed)} {verb}, "
                f"{len(report.skipped)} skipped."
            )
        )
