# Audit events belong to a workspace where they belong to one: a user's existing events go to
# their personal workspace (the only one there was), except the events of the account itself
# (sign-ins, suspensions), which the app records in no workspace (core.models.AuditEvent.workspace):
# a personal workspace can have members, and they must not see its owner's sign-ins.

import django.db.models.deletion
from django.db import migrations, models
from django.db.models import OuterRef, Subquery

# The actions recorded without a workspace (accounts.signals, accounts.services), as of this migration.
ACCOUNT_ACTIONS = ("login", "login_failed", "logout", "suspended", "unsuspended")


def workspaces_fill(apps, schema_editor):
    Workspace = apps.get_model("accounts", "Workspace")
    AuditEvent = apps.get_model("core", "AuditEvent")
    personal = Subquery(Workspace.objects.filter(personal_of=OuterRef("user")).values("pk")[:1])
    AuditEvent.objects.filter(workspace__isnull=True, user__isnull=False).exclude(
        action__in=ACCOUNT_ACTIONS
    ).update(workspace=personal)


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0007_personal_workspaces'),
        ('core', '0001_initial'),
    ]

    operations = [
        migrations.AddField(
            model_name='auditevent',
            name='workspace',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='audit_events', to='accounts.workspace'),
        ),
        migrations.RunPython(workspaces_fill, migrations.RunPython.noop),
    ]
