"""The move to workspaces, on a database that holds today's rows: every existing user gets a
personal workspace, everything they owned moves into it, and nothing is lost or changed on the way.

The migrations run for real (MigrationExecutor) on the test database: back to the last migrations
before workspaces, rows written through the historical models of that state, then forward."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.apps import apps as current_apps
from django.core.management.color import no_style
from django.core.validators import validate_slug
from django.db import connection, connections, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from accounts import workspaces
from accounts.models import ApiKey, Membership, User, Workspace, WorkspaceRole
from accounts.workspaces import workspace_personal
from billing.models import (
    BillingCustomer,
    MemberQuota,
    Plan,
    QuotaPeriod,
    QuotaTopUp,
    Subscription,
    UsageRecord,
)
from billing.selectors import entitlements_for, member_usage_this_period, quota_snapshot
from billing.services.ledger import quota_reserve
from core.models import AuditEvent
from inference.models import GenerationJob
from inference.services import job_cancel
from tests.factories import UserFactory

# The last migration of each app before workspaces.
BEFORE = [
    ("accounts", "0005_auditevent_moves_to_core"),
    ("billing", "0005_webhook_personal_data"),
    ("inference", "0003_texts_erased"),
    ("core", "0001_initial"),
]
# Workspaces exist and are filled in, the user columns not dropped yet (before the 0008s / 0006).
# These are also the data steps, each of which says it may run again (it only fills what is empty).
FILLED = [
    ("accounts", "0007_personal_workspaces"),
    ("billing", "0007_workspaces_fill"),
    ("inference", "0005_workspaces_fill"),
    ("core", "0002_auditevent_workspace"),
]

TABLES = [
    "accounts.User",
    "accounts.ApiKey",
    "billing.Plan",
    "billing.BillingCustomer",
    "billing.Subscription",
    "billing.QuotaPeriod",
    "billing.QuotaTopUp",
    "billing.UsageRecord",
    "inference.GenerationJob",
    "core.AuditEvent",
]
# Rows that an owner's user column ties to them, and so move to the owner's personal workspace.
OWNED = ["accounts.ApiKey", "billing.BillingCustomer", "billing.Subscription", "billing.QuotaPeriod",
         "billing.QuotaTopUp", "billing.UsageRecord", "inference.GenerationJob"]  # fmt: skip
# Account events (signing in, suspension) belong to no workspace, as the app records them today.
ACCOUNT_ACTIONS = {"login", "login_failed", "logout", "suspended", "unsuspended"}

ALICE = "Alice.Smith@example.com"
ULRICH = "Ülrich.O'Neil+x@example.com"


def migrate(targets):
    """Migrate the test database to ``targets``; the apps (historical models) of that state."""
    MigrationExecutor(connection).migrate(targets)
    return MigrationExecutor(connection).loader.project_state(targets).apps


def latest():
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


@pytest.fixture
def before_workspaces(transactional_db):
    """The schema as it was before workspaces; the latest schema again afterwards, even when the
    test failed half-way through a migration (its rows are emptied first, so the way forward
    cannot trip on them), so the tests after this one find the database they expect."""
    apps = migrate(BEFORE)
    try:
        yield apps
    finally:
        tables = connection.introspection.django_table_names(only_existing=True, include_views=False)
        connection.ops.execute_sql_flush(
            connection.ops.sql_flush(no_style(), tables, reset_sequences=True, allow_cascade=True)
        )
        migrate(latest())


def seed(apps) -> dict:
    """Today's rows for two users, written with the models of the pre-workspace schema; the pks
    and numbers the assertions check against."""
    get = apps.get_model
    User_, ApiKey_ = get("accounts", "User"), get("accounts", "ApiKey")
    Plan_, Customer_, Subscription_ = (
        get("billing", "Plan"),
        get("billing", "BillingCustomer"),
        get("billing", "Subscription"),
    )
    Period_, TopUp_, Usage_ = get("billing", "QuotaPeriod"), get("billing", "QuotaTopUp"), get("billing", "UsageRecord")
    Job_, Audit_ = get("inference", "GenerationJob"), get("core", "AuditEvent")
    now = timezone.now()
    limits = {"max_new_tokens": 1024, "max_prompt_tokens": 4096, "max_concurrent_jobs": 8, "requests_per_minute": 60}

    Plan_.objects.create(slug="free", name="Free", monthly_token_allowance=50_000, is_default=True, **limits)
    pro = Plan_.objects.create(
        slug="pro", name="Pro", price_cents=1_900, monthly_token_allowance=2_000_000, api_access=True, **limits
    )
    team = Plan_.objects.create(
        slug="team", name="Team", price_cents=9_900, monthly_token_allowance=15_000_000, api_access=True, **limits
    )

    # Alice: uppercase in her address; pays for Pro; two periods, a top-up, a job still queued.
    alice = User_.objects.create(email=ALICE, password="!")
    alice_start = now - timedelta(days=3)
    ApiKey_.objects.create(user=alice, name="laptop", prefix="aliceKEY0001", key_hash="a" * 64)
    ApiKey_.objects.create(user=alice, name="old", prefix="aliceKEY0002", key_hash="b" * 64, revoked_at=now)
    Customer_.objects.create(user=alice, stripe_customer_id="cus_alice")
    paid = Subscription_.objects.create(
        user=alice, plan=pro, status="active", current_period_start=alice_start,
        current_period_end=now + timedelta(days=27), stripe_subscription_id="sub_alice",
        stripe_customer_id="cus_alice", stripe_price_id="price_pro", paid_plan=pro,
        paid_period_start=alice_start, paid_at=alice_start,
    )  # fmt: skip
    last_month = Period_.objects.create(
        user=alice, period_start=now - timedelta(days=33), period_end=alice_start,
        allowance=2_000_000, used=1_234, reserved=0,
    )  # fmt: skip
    alice_period = Period_.objects.create(
        user=alice, period_start=alice_start, period_end=now + timedelta(days=27),
        allowance=2_000_000 + 5_000, used=30, reserved=400,
    )  # fmt: skip
    TopUp_.objects.create(user=alice, quota_period=alice_period, tokens=5_000, reason="outage goodwill")
    job_defaults = {"model": "inkwell-tiny", "queue": "gen.normal", "plan_slug": "pro", "prompt": "Once"}
    old_job = Job_.objects.create(
        user=alice, quota_period=last_month, status="succeeded", max_new_tokens=1_300, prompt_tokens=34,
        completion_tokens=1_200, tokens_reserved=1_334, tokens_charged=1_234, finished_at=now - timedelta(days=10),
        **job_defaults,
    )  # fmt: skip
    done_job = Job_.objects.create(
        user=alice, quota_period=alice_period, status="succeeded", max_new_tokens=64, prompt_tokens=10,
        completion_tokens=20, tokens_reserved=74, tokens_charged=30, finished_at=now - timedelta(hours=1),
        **job_defaults,
    )  # fmt: skip
    queued_job = Job_.objects.create(
        user=alice, quota_period=alice_period, status="queued", max_new_tokens=384, prompt_tokens=16,
        tokens_reserved=400, idempotency_key="retry-7", request_hash="c" * 64, enqueued_at=now, **job_defaults,
    )  # fmt: skip
    for job in (old_job, done_job):
        Usage_.objects.create(
            user=alice, job=job, quota_period=job.quota_period, plan_slug="pro", model=job.model,
            status=job.status, prompt_tokens=job.prompt_tokens, completion_tokens=job.completion_tokens,
            tokens_charged=job.tokens_charged,
        )  # fmt: skip
    Audit_.objects.create(action="login", user=alice, email=alice.email, ip="203.0.113.7")
    Audit_.objects.create(action="plan_changed", user=alice, email=alice.email, detail={"plan": "pro"})

    # Ülrich: an address that slugifies oddly; Team given without payment (comp); an expired
    # checkout that never paid; one period.
    ulrich = User_.objects.create(email=ULRICH, password="!")
    ulrich_start = now - timedelta(days=2)
    ApiKey_.objects.create(user=ulrich, name="ci", prefix="ulrichKEY001", key_hash="d" * 64, scope="read")
    Customer_.objects.create(user=ulrich, stripe_customer_id="cus_ulrich")
    comp = Subscription_.objects.create(
        user=ulrich, plan=team, status="active", current_period_start=ulrich_start,
        current_period_end=now + timedelta(days=28), is_comp=True, paid_plan=team, paid_period_start=ulrich_start,
    )  # fmt: skip
    never_paid = Subscription_.objects.create(
        user=ulrich, plan=pro, status="incomplete_expired", current_period_start=now - timedelta(days=20),
        current_period_end=now - timedelta(days=19), stripe_subscription_id="sub_ulrich_unpaid",
    )  # fmt: skip
    ulrich_period = Period_.objects.create(
        user=ulrich, period_start=ulrich_start, period_end=now + timedelta(days=28),
        allowance=15_000_000 + 1_000, used=10, reserved=20,
    )  # fmt: skip
    TopUp_.objects.create(user=ulrich, quota_period=ulrich_period, tokens=1_000, reason="partner", granted_by=alice)
    ulrich_done = Job_.objects.create(
        user=ulrich, quota_period=ulrich_period, status="succeeded", max_new_tokens=8, prompt_tokens=4,
        completion_tokens=6, tokens_reserved=12, tokens_charged=10, idempotency_key="retry-7",
        finished_at=now - timedelta(minutes=5), **{**job_defaults, "plan_slug": "team"},
    )  # fmt: skip
    Job_.objects.create(
        user=ulrich, quota_period=ulrich_period, status="queued", max_new_tokens=16, prompt_tokens=4,
        tokens_reserved=20, enqueued_at=now, **{**job_defaults, "plan_slug": "team"},
    )  # fmt: skip
    Usage_.objects.create(
        user=ulrich, job=ulrich_done, quota_period=ulrich_period, plan_slug="team", model="inkwell-tiny",
        status="succeeded", prompt_tokens=4, completion_tokens=6, tokens_charged=10,
    )  # fmt: skip
    Audit_.objects.create(action="plan_comped", user=ulrich, actor=alice, email=ulrich.email, detail={"plan": "team"})
    Audit_.objects.create(action="api_key_created", user=ulrich, actor=ulrich, email=ulrich.email)
    # An event with no user: a failed webhook (and a failed sign-in of an unknown address).
    nobody = Audit_.objects.create(action="webhook_failed", detail={"event": "evt_1"})
    Audit_.objects.create(action="login_failed", email="who@example.com", ip="198.51.100.1")

    return {
        "alice": alice.pk,
        "ulrich": ulrich.pk,
        "paid": paid.pk,
        "comp": comp.pk,
        "never_paid": never_paid.pk,
        "alice_period": alice_period.pk,
        "queued_job": queued_job.pk,
        "audit_nobody": nobody.pk,
        "counts": {label: apps.get_model(label).objects.count() for label in TABLES},
        "owners": {label: dict(apps.get_model(label).objects.values_list("pk", "user_id")) for label in OWNED},
        "audit": {e.pk: (e.user_id, e.action) for e in Audit_.objects.all()},
        "ledger": {
            p.pk: (p.user_id, p.period_start, p.period_end, p.allowance, p.used, p.reserved)
            for p in Period_.objects.all()
        },
        "subscriptions": {
            s.pk: (s.plan_id, s.status, s.stripe_subscription_id, s.is_comp, s.paid_plan_id, s.paid_period_start)
            for s in Subscription_.objects.all()
        },
    }


def personal_owner_of(workspace_id: int | None) -> int | None:
    """The user whose personal workspace ``workspace_id`` is (None for no workspace)."""
    if workspace_id is None:
        return None
    return Workspace.objects.get(pk=workspace_id).personal_of_id


def test_every_user_gets_one_personal_workspace_and_keeps_everything(before_workspaces):
    before = seed(before_workspaces)

    migrate(latest())

    alice, ulrich = User.objects.get(pk=before["alice"]), User.objects.get(pk=before["ulrich"])
    assert alice.email == ALICE and ulrich.email == ULRICH

    # One personal workspace each, owned by its person, with a valid slug that says whose it is.
    assert Workspace.objects.count() == 2
    slugs = []
    for user, readable in ((alice, "alicesmith"), (ulrich, "ulrichoneilx")):
        workspace = Workspace.objects.get(personal_of=user)
        assert list(Membership.objects.filter(workspace=workspace).values_list("user_id", "role")) == [
            (user.pk, WorkspaceRole.OWNER)
        ]
        validate_slug(workspace.slug)
        assert len(workspace.slug) <= Workspace._meta.get_field("slug").max_length
        assert workspace.slug.startswith(readable)
        assert user.email in workspace.name
        slugs.append(workspace.slug)
    assert len(set(slugs)) == 2
    assert Membership.objects.count() == 2

    # Nothing lost, nothing made up.
    assert {label: current_apps.get_model(label).objects.count() for label in TABLES} == before["counts"]

    # Every owned row is now in its owner's personal workspace; jobs and usage keep their member.
    for label, owners in before["owners"].items():
        rows = current_apps.get_model(label).objects.values_list("pk", "workspace_id")
        assert {pk: personal_owner_of(ws) for pk, ws in rows} == owners, label
    for label in ("inference.GenerationJob", "billing.UsageRecord", "accounts.ApiKey"):
        assert dict(current_apps.get_model(label).objects.values_list("pk", "user_id")) == before["owners"][label]
    # Money and account events: an event of a user's money or keys is in their workspace; their
    # sign-ins, and events of no user, are in none.
    expected = {
        pk: (None if user is None or action in ACCOUNT_ACTIONS else user)
        for pk, (user, action) in before["audit"].items()
    }
    assert {e.pk: personal_owner_of(e.workspace_id) for e in AuditEvent.objects.all()} == expected
    assert AuditEvent.objects.get(pk=before["audit_nobody"]).workspace_id is None
    assert dict(AuditEvent.objects.values_list("pk", "user_id")) == {pk: u for pk, (u, _) in before["audit"].items()}

    # The ledger's numbers are what they were; each period's member row is its one member's share.
    for period in QuotaPeriod.objects.all():
        user_id, start, end, allowance, used, reserved = before["ledger"][period.pk]
        assert (period.period_start, period.period_end, period.allowance, period.used, period.reserved) == (
            start, end, allowance, used, reserved,
        )  # fmt: skip
        shares = list(MemberQuota.objects.filter(quota_period=period).values_list("user_id", "used", "reserved"))
        assert shares == [(user_id, used, reserved)]

    # Subscriptions: unchanged, one seat; a paid (or comped) one is paid for that seat, one that
    # never paid is paid for none.
    for sub in Subscription.objects.all():
        assert (
            sub.plan_id,
            sub.status,
            sub.stripe_subscription_id,
            sub.is_comp,
            sub.paid_plan_id,
            sub.paid_period_start,
        ) == before["subscriptions"][sub.pk]
        assert sub.seats == 1
    assert Subscription.objects.get(pk=before["paid"]).paid_seats == 1
    assert Subscription.objects.get(pk=before["comp"]).paid_seats == 1
    assert Subscription.objects.get(pk=before["never_paid"]).paid_seats is None

    # Team is sold per seat now; the others are not.
    assert dict(Plan.objects.values_list("slug", "per_seat")) == {"free": False, "pro": False, "team": True}

    # What each person sees: the same plan and the same meter as before the migration.
    alice_ws, ulrich_ws = workspace_personal(alice), workspace_personal(ulrich)
    alice_now = entitlements_for(alice_ws)
    assert alice_now.plan.slug == "pro"
    assert quota_snapshot(alice_ws, entitlements=alice_now).remaining == 2_005_000 - 30 - 400
    ulrich_now = entitlements_for(ulrich_ws)
    assert (ulrich_now.plan.slug, ulrich_now.monthly_token_allowance) == ("team", 15_000_000)
    assert quota_snapshot(ulrich_ws, entitlements=ulrich_now).remaining == 15_001_000 - 10 - 20
    # The members page's "used this period" is the owner's whole use, not zero.
    assert member_usage_this_period(alice_ws, entitlements=alice_now) == {alice.pk: 30}
    assert BillingCustomer.objects.get(workspace=alice_ws).stripe_customer_id == "cus_alice"
    assert QuotaTopUp.objects.get(workspace=ulrich_ws).tokens == 1_000
    assert set(ApiKey.objects.filter(workspace=alice_ws).values_list("prefix", flat=True)) == {
        "aliceKEY0001",
        "aliceKEY0002",
    }
    assert UsageRecord.objects.filter(workspace=alice_ws).count() == 2


def test_a_job_queued_before_the_migration_settles_after_it(before_workspaces):
    """A job queued before the deploy and cancelled after it, once its owner has already reserved
    tokens for a new job: its reservation comes back to the pool and to the member's share."""
    before = seed(before_workspaces)
    migrate(latest())
    alice = User.objects.get(pk=before["alice"])
    period = QuotaPeriod.objects.get(pk=before["alice_period"])
    with transaction.atomic():  # a new job's reservation, as job_submit makes it
        quota_reserve(period=QuotaPeriod.objects.select_for_update().get(pk=period.pk), tokens=100, user=alice)

    job = job_cancel(job=GenerationJob.objects.get(pk=before["queued_job"]))

    assert job.status == "cancelled"
    period.refresh_from_db()
    assert (period.used, period.reserved) == (30, 100)
    share = MemberQuota.objects.get(quota_period=period, user=alice)
    assert (share.used, share.reserved) == (30, 100)
    assert UsageRecord.objects.get(job=job).workspace == workspace_personal(alice)


def test_the_fill_steps_run_again_fill_only_what_is_new(before_workspaces):
    """Each data step only fills what is still empty: run again (say, after old code wrote rows
    during the deploy) it fills the new rows and leaves everything else as it was."""
    seed(before_workspaces)
    apps = migrate(FILLED)
    get = apps.get_model
    User_, ApiKey_, Workspace_ = get("accounts", "User"), get("accounts", "ApiKey"), get("accounts", "Workspace")
    Period_, Job_, Audit_ = get("billing", "QuotaPeriod"), get("inference", "GenerationJob"), get("core", "AuditEvent")

    def state():
        rows = {
            label: sorted(get(label).objects.values_list("pk", "workspace_id")) for label in [*OWNED, "core.AuditEvent"]
        }
        rows["workspaces"] = sorted(Workspace_.objects.values_list("pk", "slug", "personal_of_id"))
        rows["members"] = sorted(get("accounts", "Membership").objects.values_list("workspace_id", "user_id", "role"))
        rows["shares"] = sorted(
            get("billing", "MemberQuota").objects.values_list("quota_period_id", "user_id", "used", "reserved")
        )
        rows["paid_seats"] = sorted(get("billing", "Subscription").objects.values_list("pk", "paid_seats"))
        return rows

    first = state()
    assert all(ws is not None for label in OWNED for _, ws in first[label])

    # What old code, still running during the deploy, writes: a new user with a job, and a key
    # and an event for someone who already has a workspace.
    alice = User_.objects.get(email=ALICE)
    late = User_.objects.create(email="Late.Comer@example.com", password="!")
    late_period = Period_.objects.create(
        user=late, period_start=timezone.now(), period_end=timezone.now() + timedelta(days=30), allowance=50_000
    )
    late_job = Job_.objects.create(
        user=late, quota_period=late_period, model="inkwell-tiny", max_new_tokens=8, tokens_reserved=8,
        queue="gen.low", plan_slug="free", prompt="Hi",
    )  # fmt: skip
    Period_.objects.filter(pk=late_period.pk).update(reserved=8)
    late_key = ApiKey_.objects.create(user=alice, name="made mid-deploy", prefix="aliceKEY0003", key_hash="e" * 64)
    late_event = Audit_.objects.create(action="api_key_created", user=alice, email=alice.email)

    loader = MigrationExecutor(connection).loader
    for _ in range(2):
        for app_label, name in FILLED:
            for operation in loader.get_migration(app_label, name).operations:
                if hasattr(operation, "code"):
                    with connection.schema_editor() as editor:
                        operation.code(apps, editor)

    again = state()
    late_ws = Workspace_.objects.get(personal_of=late)
    alice_ws = Workspace_.objects.get(personal_of=alice)
    new = {
        "inference.GenerationJob": [(late_job.pk, late_ws.pk)],
        "billing.QuotaPeriod": [(late_period.pk, late_ws.pk)],
        "accounts.ApiKey": [(late_key.pk, alice_ws.pk)],
        "core.AuditEvent": [(late_event.pk, alice_ws.pk)],
    }
    for label, rows in first.items():
        if label in ("workspaces", "members", "shares"):
            continue
        assert again[label] == sorted(rows + new.get(label, [])), label
    assert again["workspaces"] == sorted([*first["workspaces"], (late_ws.pk, late_ws.slug, late.pk)])
    assert again["members"] == sorted([*first["members"], (late_ws.pk, late.pk, "owner")])
    assert again["shares"] == sorted([*first["shares"], (late_period.pk, late.pk, 0, 8)])

    # And the rest of the way: nothing left without a workspace to stop the columns becoming required.
    migrate(latest())
    assert GenerationJob.objects.get(pk=late_job.pk).workspace.personal_of_id == late.pk
    assert ApiKey.objects.get(pk=late_key.pk).workspace.personal_of_id == alice.pk


# --- after the migration: personal workspaces made on first need ----------------------------------


@pytest.mark.django_db
def test_a_new_user_gets_one_personal_workspace_with_them_as_owner():
    user = UserFactory(email="Ülrich.Two+y@example.com")

    workspace = workspace_personal(user)

    assert workspace.personal_of == user
    assert workspace_personal(user) == workspace
    assert Workspace.objects.filter(personal_of=user).count() == 1
    assert list(Membership.objects.filter(user=user).values_list("workspace_id", "role")) == [
        (workspace.pk, WorkspaceRole.OWNER)
    ]
    validate_slug(workspace.slug)


@pytest.mark.django_db(transaction=True)
def test_two_first_requests_at_once_make_one_personal_workspace(monkeypatch):
    """Two requests of a new user, each on its own connection, both find no workspace and both
    go on to make one: one wins, the other gets the winner's."""
    user = UserFactory(email="twin@example.com")
    both_looked = threading.Barrier(2, timeout=10)
    slug_unique = workspaces.slug_unique

    def slug_once_both_looked(name: str) -> str:
        # Reached only by a request that found no workspace; wait for the other to get here too.
        slug = slug_unique(name)
        both_looked.wait()
        return slug

    monkeypatch.setattr(workspaces, "slug_unique", slug_once_both_looked)
    found: list[int] = []
    errors: list[BaseException] = []

    def first_request() -> None:
        try:
            found.append(workspace_personal(User.objects.get(pk=user.pk)).pk)
        except BaseException as error:
            errors.append(error)
        finally:
            connections.close_all()

    requests = [threading.Thread(target=first_request) for _ in range(2)]
    for request in requests:
        request.start()
    for request in requests:
        request.join(timeout=30)

    assert errors == []
    assert len(found) == 2 and found[0] == found[1]
    assert list(Workspace.objects.filter(personal_of=user).values_list("pk", flat=True)) == [found[0]]
    assert list(Membership.objects.filter(user=user).values_list("workspace_id", "role")) == [
        (found[0], WorkspaceRole.OWNER)
    ]
