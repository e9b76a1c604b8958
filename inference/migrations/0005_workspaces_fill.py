from django.db import migrations
from django.db.models import OuterRef, Subquery


def workspaces_fill(apps, schema_editor):
    Workspace = apps.get_model("accounts", "Workspace")
    GenerationJob = apps.get_model("inference", "GenerationJob")
    personal = Subquery(Workspace.objects.filter(personal_of=OuterRef("user")).values("pk")[:1])
    GenerationJob.objects.filter(workspace__isnull=True).update(workspace=personal)


class Migration(migrations.Migration):

    dependencies = [
        ('inference', '0004_workspaces'),
    ]

    operations = [
        migrations.RunPython(workspaces_fill, migrations.RunPython.noop),
    ]
