from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('inference', '0009_texts_sealed_fill'),
    ]

    operations = [
        migrations.RemoveField('generationjob', 'prompt_plain'),
        migrations.RemoveField('generationjob', 'messages_plain'),
        migrations.RemoveField('generationjob', 'output_text_plain'),
        migrations.RemoveField('generationjob', 'stop_plain'),
    ]
