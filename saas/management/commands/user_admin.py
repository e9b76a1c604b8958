from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from accounts.models import User
from accounts.services import user_unsuspend
from accounts.workspaces import workspace_personal
from billing.models import Plan
from billing.services.ledger import quota_top_up
from billing.services.subscriptions import plan_comp
from core.errors import ApplicationError
from saas.flows import account_suspend


class Command(BaseCommand):
    help = (
        "Operator actions on a user, the same as the admin's: "
        "topup TOKENS REASON | comp PLAN DAYS | suspend REASON | unsuspend"
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("email")
        sub = parser.add_subparsers(dest="action", required=True)
        topup = sub.add_parser("topup", help="grant extra tokens for the current period")
        topup.add_argument("tokens", type=int)
        topup.add_argument("reason")
        comp = sub.add_parser("comp", help="give a plan for some days without Stripe")
        comp.add_argument("plan", help="plan slug")
        comp.add_argument("days", type=int)
        suspend = sub.add_parser("suspend", help="block sign-in, keys and jobs")
        suspend.add_argument("reason")
        sub.add_parser("unsuspend")

    def handle(self, *args, email: str, action: str, **options) -> None:
        user = User.objects.filter(email__iexact=email).first()
        if user is None:
            raise CommandError(f"No user with the email {email}.")
        try:
            if action == "topup":
                quota_top_up(workspace=workspace_personal(user), tokens=options["tokens"], reason=options["reason"])
            elif action == "comp":
                plan = Plan.objects.filter(slug=options["plan"]).first()
                if plan is None:
                    raise CommandError(f"No plan {options['plan']!r}.")
                plan_comp(workspace=workspace_personal(user), plan=plan, days=options["days"])
            elif action == "suspend":
                account_suspend(user=user, reason=options["reason"])
            else:
                user_unsuspend(user=user)
        except ApplicationError as error:
            raise CommandError(error.message) from error
        self.stdout.write(self.style.SUCCESS(f"{action}: done for {user.email}"))
