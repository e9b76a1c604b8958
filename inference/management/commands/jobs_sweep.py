from __future__ import annotations

from django.core.management.base import BaseCommand

from inference.services import jobs_sweep


class Command(BaseCommand):
    help = "Requeue or fail jobs of dead workers and resend lost queue messages (safe any time)."

    def handle(self, *args, **options) -> None:
        report = jobs_sweep()
        self.stdout.write(f"sweep: {report}")
