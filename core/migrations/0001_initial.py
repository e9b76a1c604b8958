# The audit log moves from accounts to core with its table: only Django's idea of where the
# model lives changes here; the table, its rows and its indexes stay as they are.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def content_type_move(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    if not ContentType.objects.filter(app_label="core", model="auditevent").exists():
        ContentType.objects.filter(app_label="accounts", model="auditevent").update(app_label="core")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('accounts', '0004_audit_duplicate_subscription'),
        ('contenttypes', '0002_remove_content_type_name'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='AuditEvent',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('created_at', models.DateTimeField(auto_now_add=True, db_index=True)),
                        ('action', models.CharField(choices=[('login', 'Signed in'), ('login_failed', 'Failed sign-in'), ('logout', 'Signed out'), ('api_key_created', 'API key created'), ('api_key_revoked', 'API key revoked'), ('plan_changed', 'Plan changed'), ('top_up', 'Tokens topped up'), ('plan_comped', 'Plan granted without payment'), ('suspended', 'Account suspended'), ('unsuspended', 'Account unsuspended'), ('webhook_failed', 'Stripe webhook failed'), ('webhook_replayed', 'Stripe webhook replayed'), ('account_deleted', 'Account deleted'), ('duplicate_subscription', 'Second subscription cancelled and refunded')], db_index=True, max_length=32)),
                        ('email', models.CharField(blank=True, help_text='Kept when the user is gone or unknown.', max_length=254)),
                        ('ip', models.GenericIPAddressField(blank=True, null=True)),
                        ('user_agent', models.CharField(blank=True, max_length=300)),
                        ('detail', models.JSONField(blank=True, default=dict)),
                        ('actor', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='audit_actions', to=settings.AUTH_USER_MODEL)),
                        ('user', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='audit_events', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'ordering': ['-created_at'],
                        'db_table': 'accounts_auditevent',
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(content_type_move, migrations.RunPython.noop),
    ]
