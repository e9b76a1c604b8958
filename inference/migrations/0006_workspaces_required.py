# The workspace is required from here on; the user columns it replaced are dropped.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0008_apikey_workspace_required'),
        ('billing', '0008_workspaces_required'),
        ('inference', '0005_workspaces_fill'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='generationjob',
            name='one_job_per_idempotency_key',
        ),
        migrations.AlterField(
            model_name='generationjob',
            name='workspace',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='generation_jobs', to='accounts.workspace'),
        ),
        migrations.AddIndex(
            model_name='generationjob',
            index=models.Index(fields=['workspace', 'status'], name='inference_g_workspa_18c396_idx'),
        ),
        migrations.AddConstraint(
            model_name='generationjob',
            constraint=models.UniqueConstraint(condition=models.Q(('idempotency_key', ''), _negated=True), fields=('workspace', 'user', 'idempotency_key'), name='one_job_per_idempotency_key'),
        ),
    ]
