"""Data exports: what the archive holds for a workspace and for a person, how it is built (progress,
redelivery, failure, size cap), who may ask for it and download it, and the sweep that deletes it."""

from __future__ import annotations

import csv
import io
import json
import time
import zipfile
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone

from accounts import teams
from accounts.models import WorkspaceRole
from accounts.workspaces import membership_in, membership_personal, workspace_personal
from billing.models import BillingCustomer, UsageRecord, WebhookEvent, WebhookStatus
from core.errors import Conflict
from core.models import AuditAction, AuditEvent
from saas import exports
from saas.models import DataExport, ExportScope, ExportStatus
from tests.factories import PASSWORD, JobFactory, UserFactory
from tests.support import wait_until
from tests.workspaces.helpers import work_in

SEATS = 5


@pytest.fixture(autouse=True)
def _quick_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def team(owner):
    return teams.workspace_create(owner=owner, name="Acme")


@pytest.fixture
def member(team):
    user = UserFactory(email="member@example.com")
    teams.member_add(workspace=team, user=user, role=WorkspaceRole.MEMBER, seats=SEATS)
    return user


@pytest.fixture
def jobs(owner, member, other_user, team):
    """Texts with markers: the owner's and the member's in Acme, the member's in their personal
    workspace, and someone else's elsewhere."""
    made = {
        "owner_team": JobFactory(user=owner, workspace=team, finished=True, prompt="OWNER-TEAM-PROMPT",
                                 output_text="OWNER-TEAM-OUTPUT"),
        "member_team": JobFactory(user=member, workspace=team, finished=True, prompt="",
                                  messages=[{"role": "user", "content": "MEMBER-TEAM-CHAT"}],
                                  output_text="MEMBER-TEAM-OUTPUT", stop=["\n\n"], seed=7),
        "member_personal": JobFactory(user=member, workspace=workspace_personal(member), finished=True,
                                      prompt="MEMBER-PERSONAL-PROMPT", output_text="MEMBER-PERSONAL-OUTPUT"),
        "outsider": JobFactory(user=other_user, finished=True, prompt="OUTSIDER-PROMPT", output_text="OUTSIDER-OUT"),
    }  # fmt: skip
    for job in made.values():
        UsageRecord.objects.create(
            user=job.user, workspace=job.workspace, job=job, quota_period=job.quota_period, plan_slug="free",
            model=job.model, status=job.status, prompt_tokens=job.prompt_tokens,
            completion_tokens=job.completion_tokens, tokens_charged=job.tokens_charged,
        )  # fmt: skip
    return made


def _owner_export(owner, team) -> DataExport:
    export = exports.export_request(user=owner, scope=ExportScope.WORKSPACE, membership=membership_in(owner, team))
    exports.export_build(export_id=export.pk)
    return DataExport.objects.get(pk=export.pk)


def _own_export(user) -> DataExport:
    export = exports.export_request(user=user, scope=ExportScope.USER)
    exports.export_build(export_id=export.pk)
    return DataExport.objects.get(pk=export.pk)


def _opened(export: DataExport) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(DataExport.objects.get(pk=export.pk).archive))


def _jobs_in(archive: zipfile.ZipFile) -> list[dict]:
    return [json.loads(line) for line in archive.read("jobs.jsonl").decode().splitlines()]


def _csv_in(archive: zipfile.ZipFile, name: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(archive.read(name).decode())))


def _reauthenticated(client: Client) -> Client:
    """Through allauth's own page: the password typed again, as a person would."""
    response = client.post("/accounts/reauthenticate/", {"password": PASSWORD})
    assert response.status_code == 302, response.content[:500]
    return client


# --- what the archive holds ------------------------------------------------------------------------


def test_workspace_export_holds_every_members_jobs_with_their_texts(owner, member, team, jobs):
    export = _owner_export(owner, team)

    assert export.status == ExportStatus.READY
    archive = _opened(export)
    assert sorted(archive.namelist()) == [
        "README.txt", "audit_events.csv", "invoices.csv", "jobs.jsonl", "profile.json", "usage.csv",
    ]  # fmt: skip
    profile = json.loads(archive.read("profile.json"))
    assert profile["workspace"]["name"] == "Acme"
    assert {(m["email"], m["role"]) for m in profile["members"]} == {
        ("owner@example.com", "owner"),
        ("member@example.com", "member"),
    }
    lines = {line["id"]: line for line in _jobs_in(archive)}
    assert set(lines) == {str(jobs["owner_team"].pk), str(jobs["member_team"].pk)}
    owners = lines[str(jobs["owner_team"].pk)]
    assert (owners["prompt"], owners["output_text"], owners["member"]) == (
        "OWNER-TEAM-PROMPT", "OWNER-TEAM-OUTPUT", "owner@example.com",
    )  # fmt: skip
    members = lines[str(jobs["member_team"].pk)]
    assert members["messages"] == [{"role": "user", "content": "MEMBER-TEAM-CHAT"}]
    assert members["output_text"] == "MEMBER-TEAM-OUTPUT"
    assert members["params"]["stop"] == ["\n\n"] and members["params"]["seed"] == 7
    assert (members["status"], members["prompt_tokens"], members["completion_tokens"]) == ("succeeded", 4, 6)
    usage = _csv_in(archive, "usage.csv")
    assert {row["job_id"] for row in usage} == set(lines)
    assert {row["member"] for row in usage} == {"owner@example.com", "member@example.com"}


def test_workspace_export_lists_its_invoices_and_audit_log(owner, member, team, jobs):
    BillingCustomer.objects.create(workspace=team, stripe_customer_id="cus_Acme01")
    for event_id, status, customer in [("evt_1", "open", "cus_Acme01"), ("evt_2", "paid", "cus_Acme01"),
                                       ("evt_3", "paid", "cus_Someone_else")]:  # fmt: skip
        invoice = {"id": f"in_{customer}", "object": "invoice", "customer": customer, "status": status,
                   "amount_due": 4500, "amount_paid": 4500 if status == "paid" else 0, "currency": "usd",
                   "billing_reason": "subscription_create", "status_transitions": {"paid_at": 1_790_000_000},
                   "lines": {"data": [{"period": {"start": 1_790_000_000, "end": 1_792_600_000}}]}}  # fmt: skip
        WebhookEvent.objects.create(
            stripe_event_id=event_id, type="invoice.paid" if status == "paid" else "invoice.finalized",
            stripe_created_at=timezone.now(), payload={"id": event_id, "data": {"object": invoice}},
            status=WebhookStatus.PROCESSED,
        )  # fmt: skip

    archive = _opened(_owner_export(owner, team))

    invoices = _csv_in(archive, "invoices.csv")
    assert [(i["id"], i["status"], i["amount_paid_cents"]) for i in invoices] == [("in_cus_Acme01", "paid", "4500")]
    assert invoices[0]["period_start"].startswith("2026-")
    actions = [row["action"] for row in _csv_in(archive, "audit_events.csv")]
    assert "member_added" in actions and "data_export_requested" in actions


def test_own_export_holds_the_persons_jobs_in_every_workspace_and_no_one_elses(owner, member, team, jobs):
    export = _own_export(member)

    assert export.workspace == workspace_personal(member)
    archive = _opened(export)
    profile = json.loads(archive.read("profile.json"))
    assert profile["user"]["email"] == "member@example.com"
    assert profile["user"]["email_addresses"] == [{"email": "member@example.com", "verified": True, "primary": True}]
    assert {(m["workspace"], m["role"]) for m in profile["memberships"]} == {
        (workspace_personal(member).name, "owner"),
        ("Acme", "member"),
    }
    lines = _jobs_in(archive)
    assert {line["id"] for line in lines} == {str(jobs["member_team"].pk), str(jobs["member_personal"].pk)}
    texts = json.dumps(lines)
    assert "MEMBER-PERSONAL-PROMPT" in texts and "MEMBER-TEAM-OUTPUT" in texts
    assert "OWNER-TEAM" not in texts and "OUTSIDER" not in texts
    assert {row["member"] for row in _csv_in(archive, "usage.csv")} == {"member@example.com"}
    audit = _csv_in(archive, "audit_events.csv")
    assert {row["action"] for row in audit} >= {"member_added", "data_export_requested"}
    assert {row["email"] for row in audit} == {"member@example.com"}


def test_deleted_jobs_are_left_out(owner, team, jobs):
    jobs["owner_team"].deleted_at = timezone.now()
    jobs["owner_team"].save()

    lines = _jobs_in(_opened(_owner_export(owner, team)))

    assert [line["id"] for line in lines] == [str(jobs["member_team"].pk)]


def test_the_archive_is_sealed_at_rest(owner, team, jobs):
    export = _owner_export(owner, team)

    with connection.cursor() as cursor:
        cursor.execute("SELECT archive FROM saas_dataexport WHERE id = %s", [export.pk])
        stored = bytes(cursor.fetchone()[0])
    assert len(stored) > export.archive_bytes  # nonce and tag
    assert b"PK\x03\x04" not in stored and b"jobs.jsonl" not in stored
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(stored))
    assert zipfile.ZipFile(io.BytesIO(DataExport.objects.get(pk=export.pk).archive)).testzip() is None


# --- building: progress, redelivery, failures -----------------------------------------------------


def test_progress_is_written_after_every_batch(owner, team, jobs, monkeypatch):
    for n in range(5):
        JobFactory(user=owner, workspace=team, finished=True, prompt=f"more {n}")
    monkeypatch.setattr(exports, "BATCH_SIZE", 2)
    seen = []
    progress = exports._Archive.progress

    def progress_seen(archive, rows):
        progress(archive, rows)
        row = DataExport.objects.get(pk=archive.export.pk)
        seen.append((row.status, row.progress_done, row.progress_total))

    monkeypatch.setattr(exports._Archive, "progress", progress_seen)

    export = _owner_export(owner, team)

    total = 7 + 2 + AuditEvent.objects.filter(workspace=team).count()  # jobs, usage lines, audit events
    assert {t for _, _, t in seen} == {total}
    assert {s for s, _, _ in seen} == {ExportStatus.RUNNING}
    assert [done for _, done, _ in seen][:4] == [2, 4, 6, 7]  # jobs: three full batches and the rest
    assert [done for _, done, _ in seen] == sorted(done for _, done, _ in seen)
    assert (export.progress_done, export.progress_total) == (total, total)


def test_a_redelivered_build_of_a_ready_export_does_nothing(owner, team, jobs):
    export = _owner_export(owner, team)
    sealed = bytes(DataExport.objects.filter(pk=export.pk).values_list("archive", flat=True)[0])

    exports.export_build(export_id=export.pk)

    again = DataExport.objects.get(pk=export.pk)
    assert (again.status, again.finished_at) == (ExportStatus.READY, export.finished_at)
    assert bytes(DataExport.objects.filter(pk=export.pk).values_list("archive", flat=True)[0]) == sealed


def test_a_build_still_running_is_left_alone_and_a_dead_one_is_taken_over(owner, team, jobs, settings):
    export = exports.export_request(user=owner, scope=ExportScope.WORKSPACE, membership=membership_in(owner, team))
    DataExport.objects.filter(pk=export.pk).update(status=ExportStatus.RUNNING, started_at=timezone.now())

    exports.export_build(export_id=export.pk)  # a duplicate delivery while the first build runs
    assert DataExport.objects.get(pk=export.pk).status == ExportStatus.RUNNING

    long_ago = timezone.now() - timedelta(seconds=settings.JOB_HARD_TIME_LIMIT + 1)
    DataExport.objects.filter(pk=export.pk).update(started_at=long_ago)
    exports.export_build(export_id=export.pk)  # delivered again after its worker died
    assert DataExport.objects.get(pk=export.pk).status == ExportStatus.READY


def test_a_build_that_lost_its_claim_writes_nothing(owner, team, jobs, monkeypatch):
    export = exports.export_request(user=owner, scope=ExportScope.WORKSPACE, membership=membership_in(owner, team))
    line = exports._job_line

    def swept_meanwhile(job):
        DataExport.objects.filter(pk=export.pk).update(status=ExportStatus.FAILED, error="swept")
        return line(job)

    monkeypatch.setattr(exports, "_job_line", swept_meanwhile)
    exports.export_build(export_id=export.pk)

    row = DataExport.objects.get(pk=export.pk)
    assert (row.status, row.error, row.archive) == (ExportStatus.FAILED, "swept", None)


def test_an_export_over_the_size_cap_fails_with_a_clear_message(owner, team, jobs, monkeypatch):
    monkeypatch.setattr(exports, "ARCHIVE_MAX_BYTES", 200)

    export = _owner_export(owner, team)

    assert export.status == ExportStatus.FAILED
    assert "larger than" in export.error and export.archive is None


def test_an_export_past_the_time_limit_fails_with_a_clear_message(owner, team, jobs, settings):
    settings.JOB_SOFT_TIME_LIMIT = 0

    export = _owner_export(owner, team)

    assert (export.status, export.error) == (
        ExportStatus.FAILED, "The export took too long to prepare. Please ask again, or contact support.",
    )  # fmt: skip


def test_an_unexpected_error_fails_the_export_and_says_to_ask_again(owner, team, jobs, monkeypatch):
    def broken(job):
        raise RuntimeError("boom")

    monkeypatch.setattr(exports, "_job_line", broken)

    export = _owner_export(owner, team)

    assert export.status == ExportStatus.FAILED
    assert "ask again" in export.error and "boom" not in export.error


def test_a_newer_export_replaces_the_older_archive(owner, team, jobs):
    first = _owner_export(owner, team)
    second = _owner_export(owner, team)

    assert DataExport.objects.get(pk=first.pk).status == ExportStatus.EXPIRED
    assert DataExport.objects.get(pk=first.pk).archive is None
    assert DataExport.objects.get(pk=second.pk).status == ExportStatus.READY


def test_one_export_at_a_time_per_person_and_kind(owner, team, jobs):
    exports.export_request(user=owner, scope=ExportScope.WORKSPACE, membership=membership_in(owner, team))

    with pytest.raises(Conflict, match="already being prepared"):
        exports.export_request(user=owner, scope=ExportScope.WORKSPACE, membership=membership_in(owner, team))
    # Their own data is another kind: it may be prepared meanwhile.
    exports.export_request(user=owner, scope=ExportScope.USER)
    assert DataExport.objects.filter(requested_by=owner).count() == 2


# --- the pages ---------------------------------------------------------------------------------------


def test_asking_for_an_export_needs_the_password_again(member, jobs):
    client = Client()
    client.force_login(member)

    response = client.post("/account/export/")

    assert response.status_code == 302 and response["Location"].startswith("/accounts/reauthenticate/")
    assert not DataExport.objects.exists()
    # The password typed again: the suspended request goes through.
    response = client.post(response["Location"], {"password": PASSWORD})
    export = DataExport.objects.get()
    assert (export.requested_by, export.scope, export.status) == (member, ExportScope.USER, ExportStatus.QUEUED)
    event = AuditEvent.objects.get(action=AuditAction.DATA_EXPORT_REQUESTED)
    assert (event.user, event.workspace, event.detail["export"]) == (member, export.workspace, str(export.pk))


def test_a_member_may_not_export_the_workspace(member, team, jobs):
    client = _reauthenticated(work_in(member, team))

    assert client.get("/workspace/export/").status_code == 403
    response = client.post("/workspace/export/")

    assert response.status_code == 403
    assert b"Only the owner of Acme can export its data" in response.content
    assert not DataExport.objects.exists()


def test_the_owner_asks_and_sees_the_export_on_the_page(owner, team, jobs):
    client = _reauthenticated(work_in(owner, team))

    response = client.post("/workspace/export/", follow=True)

    export = DataExport.objects.get()
    assert (export.workspace, export.scope) == (team, ExportScope.WORKSPACE)
    page = response.content.decode()
    assert "Your export is being prepared" in page
    assert f'data-status-url="/exports/{export.pk}/status/"' in page
    assert "An export is being prepared" in page  # the button waits

    again = client.post("/workspace/export/", follow=True).content.decode()
    assert "already being prepared" in again
    assert DataExport.objects.count() == 1


def test_status_shows_progress_to_its_owner_only(owner, other_user, team, jobs):
    export = _owner_export(owner, team)
    client = Client()
    client.force_login(owner)

    body = client.get(f"/exports/{export.pk}/status/").json()

    assert (body["status"], body["progress_done"]) == ("ready", body["progress_total"])
    assert body["download_url"].startswith("/exports/")
    stranger = Client()
    stranger.force_login(other_user)
    assert stranger.get(f"/exports/{export.pk}/status/").status_code == 404


def test_the_download_is_the_zip_for_the_person_who_asked(owner, team, jobs):
    export = _owner_export(owner, team)
    client = Client()
    client.force_login(owner)
    url = client.get(f"/exports/{export.pk}/status/").json()["download_url"]

    response = client.get(url)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    filename = f"inkwell-{team.slug}-{timezone.now():%Y-%m-%d}.zip"
    assert response["Content-Disposition"] == f'attachment; filename="{filename}"'
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert "OWNER-TEAM-OUTPUT" in archive.read("jobs.jsonl").decode()
    assert DataExport.objects.get(pk=export.pk).downloaded_at is not None
    event = AuditEvent.objects.get(action=AuditAction.DATA_EXPORT_DOWNLOADED)
    assert (event.user, event.workspace, event.detail["export"]) == (owner, team, str(export.pk))


def test_the_download_link_is_refused_to_anyone_else_when_tampered_or_expired(owner, member, team, jobs):
    export = _owner_export(owner, team)
    url = "/exports/" + exports.export_token(export) + "/"
    someone = Client()
    someone.force_login(member)
    mine = Client()
    mine.force_login(owner)

    assert someone.get(url).status_code == 404
    assert Client().get(url).status_code == 404
    assert mine.get(url[:-3] + ("A" if url[-3] != "A" else "B") + "/").status_code == 404
    assert mine.get("/exports/" + str(export.pk) + "/").status_code == 404  # an id is not a link
    DataExport.objects.filter(pk=export.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert mine.get(url).status_code == 404
    assert not AuditEvent.objects.filter(action=AuditAction.DATA_EXPORT_DOWNLOADED).exists()


def test_an_old_link_is_refused_even_if_the_row_were_still_valid(owner, team, jobs, settings, monkeypatch):
    export = _owner_export(owner, team)
    made_at = time.time() - settings.EXPORT_LINK_HOURS * 3600 - 1
    monkeypatch.setattr("django.core.signing.time.time", lambda: made_at)
    stale = exports.export_token(export)
    monkeypatch.undo()
    client = Client()
    client.force_login(owner)

    assert client.get(f"/exports/{stale}/").status_code == 404


def test_the_account_page_links_to_the_export(member):
    client = Client()
    client.force_login(member)

    assert b'href="/account/export/"' in client.get("/account/").content
    page = client.get("/account/export/").content.decode()
    assert "Export your data" in page and "None yet." in page


# --- the sweep ---------------------------------------------------------------------------------------


def test_the_sweep_deletes_expired_archives_and_fails_stalled_builds(owner, member, team, jobs, settings):
    ready = _owner_export(owner, team)
    fresh = exports.export_request(user=member, scope=ExportScope.USER)
    stalled = exports.export_request(user=owner, scope=ExportScope.USER)
    long_ago = timezone.now() - timedelta(seconds=settings.BROKER_VISIBILITY_TIMEOUT + 2 * settings.JOB_HARD_TIME_LIMIT)
    DataExport.objects.filter(pk=stalled.pk).update(created_at=long_ago - timedelta(seconds=1))

    assert exports.exports_sweep() == 1
    assert DataExport.objects.get(pk=stalled.pk).status == ExportStatus.FAILED
    assert "Please ask again" in DataExport.objects.get(pk=stalled.pk).error
    assert DataExport.objects.get(pk=fresh.pk).status == ExportStatus.QUEUED

    later = timezone.now() + timedelta(hours=settings.EXPORT_LINK_HOURS, seconds=1)
    assert exports.exports_sweep(now=later) == 2  # the ready one's link is over; the queued one stalled by then
    swept = DataExport.objects.get(pk=ready.pk)
    assert (swept.status, swept.archive) == (ExportStatus.EXPIRED, None)
    assert DataExport.objects.get(pk=fresh.pk).status == ExportStatus.FAILED


@pytest.mark.django_db(transaction=True)  # the chore closes its connection when done
def test_the_maintenance_schedule_runs_the_sweep(owner, team, jobs):
    ready = _owner_export(owner, team)
    DataExport.objects.filter(pk=ready.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    call_command("maintenance", "--once", "--only", "retention")

    assert DataExport.objects.get(pk=ready.pk).status == ExportStatus.EXPIRED


# --- through a real worker ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_builds_the_export(celery_worker, default_plan):
    person = UserFactory(email="worker-export@example.com")
    JobFactory(user=person, finished=True, prompt="WORKER-PROMPT", output_text="WORKER-OUTPUT")

    export = exports.export_request(user=person, scope=ExportScope.USER)  # sent once committed

    wait_until(
        lambda: DataExport.objects.get(pk=export.pk).status == ExportStatus.READY,
        timeout=60,
        what="the export",
        process=celery_worker.process,
    )
    assert "WORKER-OUTPUT" in _opened(export).read("jobs.jsonl").decode()
    assert membership_personal(person).workspace == DataExport.objects.get(pk=export.pk).workspace
