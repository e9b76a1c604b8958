from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count, OuterRef, Subquery

from accounts.models import Membership, User, Workspace, WorkspaceRole
from billing.selectors import entitlements_for, seats_of
from core.errors import ApplicationError

COLUMNS = ("slug", "name", "plan", "seats bought/paid", "members", "owner")


class Command(BaseCommand):
    help = (
        "List workspaces, one a line, tab-separated: slug, name, plan, seats bought/paid, members, owner's "
        "email. With --email, only the workspaces that person is a member of, with their role there."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--email", default=None, help="Only this person's workspaces (and their role).")

    def handle(self, *args, email: str | None, **options) -> None:
        workspaces = Workspace.objects.annotate(
            member_count=Count("memberships", distinct=True),
            owner_email=Subquery(
                Membership.objects.filter(workspace=OuterRef("pk"), role=WorkspaceRole.OWNER).values("user__email")[:1]
            ),
        ).order_by("slug")
        roles: dict[int, str] = {}
        if email is not None:
            user = User.objects.filter(email__iexact=email.strip()).first()
            if user is None:
                raise CommandError(f"No user with the email {email}; `manage.py workspace_list` lists every workspace.")
            roles = dict(Membership.objects.filter(user=user).values_list("workspace_id", "role"))
            workspaces = workspaces.filter(pk__in=roles)
        self.stdout.write("\t".join(COLUMNS + (("role",) if email is not None else ())))
        for workspace in workspaces:
            self.stdout.write("\t".join(self._line(workspace) + ([roles[workspace.pk]] if email is not None else [])))

    def _line(self, workspace: Workspace) -> list[str]:
        try:
            entitlements = entitlements_for(workspace)
        except ApplicationError as error:  # no default plan yet
            raise CommandError(error.message) from error
        subscription = entitlements.subscription
        plan = entitlements.plan.slug + (" (comp)" if subscription is not None and subscription.is_comp else "")
        return [
            workspace.slug,
            workspace.name,
            plan,
            f"{seats_of(subscription, paid=False)}/{seats_of(subscription)}",
            str(workspace.member_count),
            workspace.owner_email or "-",
        ]
