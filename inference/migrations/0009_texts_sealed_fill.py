from django.db import migrations

from core.fields import sealed_update_many, sealed_values

TEXTS = ("prompt", "messages", "output_text", "stop")
BATCH = 500


def _batches(queryset):
    last = None
    while True:
        page = queryset.order_by("pk")
        if last is not None:
            page = page.filter(pk__gt=last)
        rows = list(page[:BATCH])
        if not rows:
            return
        yield rows
        last = rows[-1].pk


def texts_seal(apps, schema_editor):
    GenerationJob = apps.get_model("inference", "GenerationJob")
    plain = [f"{name}_plain" for name in TEXTS]
    for rows in _batches(GenerationJob.objects.only("pk", "workspace_id", *plain)):
        updates = {
            job.pk: sealed_values(job, **{name: getattr(job, f"{name}_plain") for name in TEXTS}) for job in rows
        }
        sealed_update_many(GenerationJob, updates)


def texts_open(apps, schema_editor):
    GenerationJob = apps.get_model("inference", "GenerationJob")
    for rows in _batches(GenerationJob.objects.only("pk", "workspace_id", *TEXTS)):
        for job in rows:
            job.prompt_plain = job.prompt
            job.messages_plain = job.messages
            job.output_text_plain = job.output_text
            job.stop_plain = job.stop
        GenerationJob.objects.bulk_update(rows, [f"{name}_plain" for name in TEXTS])


class Migration(migrations.Migration):

    dependencies = [
        ('inference', '0008_texts_sealed_add'),
    ]

    operations = [
        migrations.RunPython(texts_seal, texts_open),
    ]
