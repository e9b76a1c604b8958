# Each user's billing rows move to their personal workspace (accounts.0007 made one for every
# user); a subscription paid for before seats existed was paid for its one seat.

from django.db import migrations
from django.db.models import Exists, F, OuterRef, Subquery


def workspaces_fill(apps, schema_editor):
    Workspace = apps.get_model("accounts", "Workspace")
    personal = Subquery(Workspace.objects.filter(personal_of=OuterRef("user")).values("pk")[:1])
    for name in ("BillingCustomer", "Subscription", "QuotaPeriod", "QuotaTopUp", "UsageRecord"):
        apps.get_model("billing", name).objects.filter(workspace__isnull=True).update(workspace=personal)
    member_shares_fill(apps)
    Subscription = apps.get_model("billing", "Subscription")
    Subscription.objects.filter(paid_period_start__isnull=False, paid_seats__isnull=True).update(paid_seats=F("seats"))
    # The seeded Team plan is sold per seat from now on. Its subscribers have one seat, so their
    # price and allowance are what they were.
    apps.get_model("billing", "Plan").objects.filter(slug="team").update(per_seat=True)


def member_shares_fill(apps):
    """Until now a period was one person's: their share of it (the member sub-ledger) is the whole
    period. Without it, a job reserved before the migration and settled after it would release
    its tokens from a share that never held them (and a member's cap would start from zero)."""
    QuotaPeriod = apps.get_model("billing", "QuotaPeriod")
    MemberQuota = apps.get_model("billing", "MemberQuota")
    missing = QuotaPeriod.objects.filter(
        ~Exists(MemberQuota.objects.filter(quota_period=OuterRef("pk"), user=OuterRef("user")))
    ).values_list("pk", "user_id", "reserved", "used")
    batch = []
    for period_id, user_id, reserved, used in missing.iterator(chunk_size=2000):
        batch.append(MemberQuota(quota_period_id=period_id, user_id=user_id, reserved=reserved, used=used))
        if len(batch) == 2000:
            MemberQuota.objects.bulk_create(batch)
            batch = []
    MemberQuota.objects.bulk_create(batch)


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0006_workspaces'),
    ]

    operations = [
        migrations.RunPython(workspaces_fill, migrations.RunPython.noop),
    ]
