# The workspace takes over what a user owned: the Stripe customer, subscriptions, the ledger,
# top-ups and usage (usage keeps the member too). Nullable here; 0007 fills it from each user's
# personal workspace; 0008 makes it required and drops the user columns the workspace replaces.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def _workspace(null=True, related_name=None, one_to_one=False):
    field = models.OneToOneField if one_to_one else models.ForeignKey
    return field(null=null, blank=False, on_delete=django.db.models.deletion.CASCADE, related_name=related_name, to='accounts.workspace')


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0007_personal_workspaces'),
        ('billing', '0005_webhook_personal_data'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(model_name='billingcustomer', name='workspace', field=_workspace(related_name='billing_customer', one_to_one=True)),
        migrations.AddField(model_name='subscription', name='workspace', field=_workspace(related_name='subscriptions')),
        migrations.AddField(model_name='quotaperiod', name='workspace', field=_workspace(related_name='quota_periods')),
        migrations.AddField(model_name='quotatopup', name='workspace', field=_workspace(related_name='top_ups')),
        migrations.AddField(model_name='usagerecord', name='workspace', field=_workspace(related_name='usage_records')),
        migrations.AddField(model_name='plan', name='per_seat', field=models.BooleanField(default=False, help_text='Priced per seat: the price and the token allowance are per seat, and workspaces buy seats.')),
        migrations.AddField(model_name='subscription', name='seats', field=models.PositiveIntegerField(default=1)),
        migrations.AddField(model_name='subscription', name='paid_seats', field=models.PositiveIntegerField(blank=True, editable=False, null=True)),
        migrations.CreateModel(
            name='MemberQuota',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('reserved', models.BigIntegerField(default=0)),
                ('used', models.BigIntegerField(default=0)),
                ('quota_period', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='member_quotas', to='billing.quotaperiod')),
                ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='member_quotas', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'constraints': [
                    models.UniqueConstraint(fields=('quota_period', 'user'), name='one_member_quota_per_period'),
                    models.CheckConstraint(condition=models.Q(('reserved__gte', 0)), name='member_quota_reserved_not_negative'),
                    models.CheckConstraint(condition=models.Q(('used__gte', 0)), name='member_quota_used_not_negative'),
                ],
            },
        ),
    ]
