# Every existing user gets their personal workspace (owner), and their API keys move into it.
# New users get theirs from accounts.selectors.workspace_personal, on first need.

from django.db import migrations
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
        ApiKey.objects.filter(user=user, workspace__isnull=True).update(workspace=workspace)


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0006_workspaces'),
    ]

    operations = [
        migrations.RunPython(personal_workspaces_create, migrations.RunPython.noop),
    ]
