from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from accounts import teams
from accounts.models import Membership, User, Workspace
from accounts.workspaces import membership_in
from billing.selectors import seats_for
from core.errors import ApplicationError
from saas.flows import member_remove

NO_CAP = "none"


class Command(BaseCommand):
    help = (
        "Operator actions on a workspace's members, the same as its members page: "
        "add-member EMAIL ROLE | remove-member EMAIL | set-cap EMAIL TOKENS (TOKENS: a number, or 'none')"
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("slug", help="the workspace's slug (`manage.py workspace_list` lists them)")
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add-member", help="add a user with an account, within the workspace's seats")
        add.add_argument("email")
        add.add_argument("role", help="admin or member")
        remove = sub.add_parser("remove-member", help="remove a member: keys revoked, running jobs stopped")
        remove.add_argument("email")
        cap = sub.add_parser("set-cap", help="set a member's monthly token cap ('none' lifts it)")
        cap.add_argument("email")
        cap.add_argument("tokens")

    def handle(self, *args, slug: str, action: str, email: str, **options) -> None:
        workspace = Workspace.objects.filter(slug=slug).first()
        if workspace is None:
            raise CommandError(f"No workspace with the slug {slug!r}; `manage.py workspace_list` lists them.")
        user = User.objects.filter(email__iexact=email.strip()).first()
        if user is None:
            raise CommandError(
                f"No user with the email {email}; they must sign up first (or be invited from the members page)."
            )
        try:
            if action == "add-member":
                message = self._add(workspace, user, options["role"].strip().lower())
            elif action == "remove-member":
                stopped = member_remove(membership=self._member(workspace, user))
                message = (
                    f"Removed {user.email} from {workspace.slug}; their API keys there were revoked and "
                    f"{stopped} job(s) stopped."
                )
            else:
                message = self._cap(self._member(workspace, user), options["tokens"])
        except ApplicationError as error:
            raise CommandError(error.message) from error
        self.stdout.write(self.style.SUCCESS(message))

    def _member(self, workspace: Workspace, user: User) -> Membership:
        membership = membership_in(user, workspace)
        if membership is None:
            raise CommandError(
                f"{user.email} is not a member of {workspace.slug}; "
                f"`manage.py workspace_list --email {user.email}` lists their workspaces."
            )
        return membership

    def _add(self, workspace: Workspace, user: User, role: str) -> str:
        existing = membership_in(user, workspace)
        if existing is not None:
            return f"{user.email} is already a member of {workspace.slug} ({existing.role}); nothing changed."
        membership = teams.member_add(workspace=workspace, user=user, role=role, seats=seats_for(workspace))
        return f"Added {user.email} to {workspace.slug} as {membership.role}."

    def _cap(self, membership: Membership, tokens: str) -> str:
        cap = None if tokens.strip().lower() == NO_CAP else teams.member_cap_parse(tokens)
        teams.member_cap_set(membership=membership, cap=cap)
        if cap is None:
            return f"{membership.user.email} has no cap in {membership.workspace.slug} now."
        return f"{membership.user.email} may spend up to {cap:,} tokens a period in {membership.workspace.slug}."
