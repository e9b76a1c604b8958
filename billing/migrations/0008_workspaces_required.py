# The workspace is required from here on; the user columns it replaced are dropped.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0008_apikey_workspace_required'),
        ('billing', '0007_workspaces_fill'),
        ('inference', '0005_workspaces_fill'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='quotaperiod',
            name='one_quota_period_per_start',
        ),
        migrations.RemoveIndex(
            model_name='subscription',
            name='billing_sub_user_id_fe5b98_idx',
        ),
        migrations.RemoveField(
            model_name='billingcustomer',
            name='user',
        ),
        migrations.RemoveField(
            model_name='quotaperiod',
            name='user',
        ),
        migrations.RemoveField(
            model_name='quotatopup',
            name='user',
        ),
        migrations.RemoveField(
            model_name='subscription',
            name='user',
        ),
        migrations.AlterField(
            model_name='billingcustomer',
            name='workspace',
            field=models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='billing_customer', to='accounts.workspace'),
        ),
        migrations.AlterField(
            model_name='quotaperiod',
            name='workspace',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='quota_periods', to='accounts.workspace'),
        ),
        migrations.AlterField(
            model_name='quotatopup',
            name='workspace',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='top_ups', to='accounts.workspace'),
        ),
        migrations.AlterField(
            model_name='subscription',
            name='workspace',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='subscriptions', to='accounts.workspace'),
        ),
        migrations.AlterField(
            model_name='usagerecord',
            name='workspace',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='usage_records', to='accounts.workspace'),
        ),
        migrations.AddIndex(
            model_name='subscription',
            index=models.Index(fields=['workspace', 'status'], name='billing_sub_workspa_dfdb44_idx'),
        ),
        migrations.AddIndex(
            model_name='usagerecord',
            index=models.Index(fields=['workspace', 'created_at'], name='billing_usa_workspa_fb7ac7_idx'),
        ),
        migrations.AddConstraint(
            model_name='quotaperiod',
            constraint=models.UniqueConstraint(fields=('workspace', 'period_start'), name='one_quota_period_per_start'),
        ),
    ]
