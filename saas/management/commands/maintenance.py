"""`manage.py maintenance`: the sweeper every SWEEP_INTERVAL_SECONDS and text retention every
RETENTION_INTERVAL_SECONDS, until SIGTERM or SIGINT (`--once`: each once, for cron).

Run one or more per deployment (the runs take a PostgreSQL advisory lock, so extra copies only
stand by); `make run` starts one. It replaces `celery beat`: see saas/maintenance.py for why.
"""

from __future__ import annotations

import signal

from django.core.management.base import BaseCommand, CommandError

from saas.maintenance import Outcome, chore_run, chores, maintenance_loop


class Command(BaseCommand):
    help = "Run the sweeper and text retention on their schedule (or each once with --once)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--once", action="store_true", help="run each chore once and exit (for cron)")
        parser.add_argument(
            "--only",
            action="append",
            choices=[chore.name for chore in chores()],
            help="run only this chore (repeatable)",
        )

    def handle(self, *args, **options) -> None:
        selected = [chore for chore in chores() if not options["only"] or chore.name in options["only"]]
        if options["once"]:
            outcomes = {chore.name: chore_run(chore) for chore in selected}
            self.stdout.write(", ".join(f"{name}: {outcome.value}" for name, outcome in outcomes.items()))
            if Outcome.FAILED in outcomes.values():
                raise CommandError("a chore failed (see the log above)")
            return
        self._stopping = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._request_stop)
        self.stdout.write(
            "maintenance: " + ", ".join(f"{chore.name} every {chore.interval_seconds:g}s" for chore in selected)
        )
        maintenance_loop(chores=selected, stopping=lambda: self._stopping)
        self.stdout.write("maintenance: stopped")

    def _request_stop(self, signum, frame) -> None:
        # Only a flag: the loop finishes the chore in progress and stops within a tick.
        self._stopping = True
