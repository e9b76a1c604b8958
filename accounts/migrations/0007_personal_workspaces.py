# Every existing user gets their personal workspace (owner), and their API keys move into it.
# New users get theirs from accounts.workspaces.workspace_personal, on first need.

from django.db import migrations
from django.db.models import OuterRef, Subquery
from django.utils.text import slugify


def personal_workspaces_create(apps, schema_editor):
    User = apps.get_model("accounts", "User")
    Workspace = apps.get_model("accounts", "Workspace")
    Membership = apps.get_model("accounts", "Membership")
    ApiKey = apps.get_model("accounts", "ApiKey")
    for user in User.objects.filter(personal_workspace__isnull=True).iterator():
        base = slugify(user.email.split("@")[0])[:40] or "workspace"
        workspace = Workspace.objects.create(
            name=f"{user.email} (personal)"[:100], slug=f"{base}-{user.pk}", personal_of=user
        )
        Membership.objects.create(workspace=workspace, user=user, role="owner")
    # Every key still without a workspace, not only those of the users made one above: run again,
    # this also moves a key that old code made for a user who already had their workspace.
    personal = Subquery(Workspace.objects.filter(personal_of=OuterRef("user")).values("pk")[:1])
    ApiKey.objects.filter(workspace__isnull=True).update(workspace=personal)


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0006_workspaces'),
    ]

    operations = [
        migrations.RunPython(personal_workspaces_create, migrations.RunPython.noop),
    ]
