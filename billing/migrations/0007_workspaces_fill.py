# Each user's billing rows move to their personal workspace (accounts.0007 made one for every
# user); a subscription paid for before seats existed was paid for its one seat.

from django.db import migrations
from django.db.models import F, OuterRef, Subquery


def workspaces_fill(apps, schema_editor):
    Workspace = apps.get_model("accounts", "Workspace")
    personal = Subquery(Workspace.objects.filter(personal_of=OuterRef("user")).values("pk")[:1])
    for name in ("BillingCustomer", "Subscription", "QuotaPeriod", "QuotaTopUp", "UsageRecord"):
        apps.get_model("billing", name).objects.filter(workspace__isnull=True).update(workspace=personal)
    Subscription = apps.get_model("billing", "Subscription")
    Subscription.objects.filter(paid_period_start__isnull=False, paid_seats__isnull=True).update(paid_seats=F("seats"))
    # The seeded Team plan is sold per seat from now on. Its subscribers have one seat, so their
    # price and allowance are what they were.
    apps.get_model("billing", "Plan").objects.filter(slug="team").update(per_seat=True)


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0006_workspaces'),
    ]

    operations = [
        migrations.RunPython(workspaces_fill, migrations.RunPython.noop),
    ]
