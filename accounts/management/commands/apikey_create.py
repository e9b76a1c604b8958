from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from accounts.apikeys import api_key_create
from accounts.models import ApiKeyScope, User, Workspace
from accounts.workspaces import membership_in, workspace_personal


class Command(BaseCommand):
    help = (
        "Create an API key for a user and print it once (only its hash is stored). It acts in the user's "
        "personal workspace, or in --workspace SLUG, of which the user must be a member."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--email", required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--workspace", default=None, help="Workspace slug (default: the personal workspace).")
        parser.add_argument("--read-only", action="store_true")
        parser.add_argument("--expires-in-days", type=int, default=None)

    def handle(
        self, *args, email: str, name: str, read_only: bool, expires_in_days: int | None, workspace, **options
    ) -> None:
        user = User.objects.filter(email__iexact=email).first()
        if user is None:
            raise CommandError(f"No user with the email {email}.")
        if workspace is None:
            target = workspace_personal(user)
        else:
            target = Workspace.objects.filter(slug=workspace).first()
            if target is None:
                raise CommandError(f"No workspace with the slug {workspace!r}; `manage.py workspace_list` lists them.")
            if membership_in(user, target) is None:
                raise CommandError(f"{user.email} is not a member of {target.slug}; add them first.")
        _, raw = api_key_create(
            user=user,
            workspace=target,
            name=name,
            scope=ApiKeyScope.READ if read_only else ApiKeyScope.WRITE,
            expires_in_days=expires_in_days,
        )
        self.stdout.write(raw)
