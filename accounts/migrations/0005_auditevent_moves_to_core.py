# The audit log now lives in core (core.0001 takes it over with its table): forget it here
# without touching the database.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0004_audit_duplicate_subscription'),
        ('core', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name='AuditEvent')],
            database_operations=[],
        ),
    ]
