# Customers' texts move to sealed columns (core.fields): the plaintext columns are renamed aside,
# sealed ones added; 0009 seals every row; 0010 drops the plaintext columns.
import core.fields
from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0004_data_keys'),
        ('inference', '0007_member_history_kept'),
    ]

    operations = [
        migrations.RenameField('generationjob', 'prompt', 'prompt_plain'),
        migrations.RenameField('generationjob', 'messages', 'messages_plain'),
        migrations.RenameField('generationjob', 'output_text', 'output_text_plain'),
        migrations.RenameField('generationjob', 'stop', 'stop_plain'),
        migrations.AddField('generationjob', 'prompt', core.fields.SealedTextField(blank=True)),
        migrations.AddField(
            'generationjob', 'messages',
            core.fields.SealedJSONField(blank=True, help_text='Chat turns, when the job is a chat.'),
        ),
        migrations.AddField('generationjob', 'output_text', core.fields.SealedTextField(blank=True)),
        migrations.AddField('generationjob', 'stop', core.fields.SealedJSONField(blank=True, default=list)),
    ]
