# A job is run by a member (user, kept) in a workspace (new) whose pool pays for it. Nullable
# here; 0005 fills it from the user's personal workspace; 0006 makes it required.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0007_personal_workspaces'),
        ('inference', '0003_texts_erased'),
    ]

    operations = [
        migrations.AddField(
            model_name='generationjob',
            name='workspace',
            field=models.ForeignKey(null=True, on_delete=django.db.models.deletion.CASCADE, related_name='generation_jobs', to='accounts.workspace'),
        ),
    ]
