"""Data exports: a zip of JSON and CSV with everything Inkwell holds for a workspace, or for a person.

Two scopes, each asked for on its own page and downloaded only by the person who asked:

- workspace (its owner only, /workspace/export/): the workspace and its members, every job of
  every member with its texts (owners take out their team's data; inside the product each member's
  texts stay their own), the workspace's usage, its invoices and its audit log.
- user (anyone, /account/export/): the person's own data. Their profile and memberships; the jobs
  they ran, with texts, in every workspace they belong to now (what their history pages show them:
  in a team, their own jobs and no one else's; jobs left behind in a team they have left belong to
  that team); their usage lines in those workspaces; the invoices of their personal workspace (a
  team's invoices are its owner's); and the audit events about them or done by them.

A Celery task builds the archive in memory, in batches, writing its progress to the row, and
stores it in the row sealed with the workspace's data key (the person's personal workspace for
their own export), so web processes on any host can serve it. The link is a signature of the
export's id that works only for the person who asked, until EXPORT_LINK_HOURS after it is ready;
then the maintenance chore deletes the archive. Archives are capped at ARCHIVE_MAX_BYTES
(compressed), and each person keeps at most one archive per workspace and scope: a newer one
replaces the older.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from allauth.account.decorators import reauthentication_required
from allauth.account.models import EmailAddress
from celery import current_app
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core import signing
from django.core.exceptions import PermissionDenied
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone

from accounts.models import Membership, User, Workspace, WorkspaceRole
from accounts.workspaces import NotAllowed, member_required, members_of, memberships_of, workspace_personal
from billing.models import UsageRecord
from billing.selectors import invoices_known
from core.audit import audit_record
from core.errors import ApplicationError, Conflict
from core.models import AuditAction, AuditEvent
from inference.models import GenerationJob
from inference.selectors import DELETED_ACCOUNT, USAGE_CSV_COLUMNS, jobs_of, usage_csv_row, usage_records
from saas.celery import MAINTENANCE_QUEUE
from saas.models import ACTIVE_STATUSES, DataExport, ExportScope, ExportStatus

logger = logging.getLogger(__name__)

# The build task (saas/tasks.py), sent by its name: this module never imports the tasks, which import it.
BUILD_EXPORT_TASK = "saas.build_export"
# Compressed. The whole archive is held in memory while it is built, sealed and served, and stored
# in one database value; texts compress about fivefold, so this is some 500 MB of history.
ARCHIVE_MAX_BYTES = 100 * 1024 * 1024
# Rows read (and decrypted) per database round trip; progress is written after each batch.
BATCH_SIZE = 200
RECENT_EXPORTS = 5
DOWNLOAD_LINK_SALT = "inkwell.saas.export-download"

README = """\
Inkwell data export

profile.json        who: the workspace and its members, or you and your memberships
jobs.jsonl          one JSON object a line: every job with its prompt, chat messages, output,
                    parameters, status, token counts and times (texts erased by your plan's
                    retention or deleted by you are not there)
usage.csv           what each finished job was charged
invoices.csv        the invoices Inkwell was told about by Stripe (the billing portal has the PDFs)
audit_events.csv    the audit log: sign-ins, keys, plan and member changes, exports
"""


# --- asking for one --------------------------------------------------------------------------------


def export_permission_check(membership: Membership) -> None:
    """A workspace's export holds every member's texts: its owner's alone to take."""
    if membership.role != WorkspaceRole.OWNER:
        raise NotAllowed(
            f"Only the owner of {membership.workspace.name} can export its data; your role is "
            f"{membership.get_role_display().lower()}. You can export your own data from your account page.",
            code="role_not_allowed",
        )


def export_request(*, user: User, scope: str, membership: Membership | None = None, request=None) -> DataExport:
    """Queue an export: of ``membership``'s workspace (its owner only), or of ``user``'s own data.
    One at a time per person, workspace and scope; the build is sent once the row is committed."""
    if scope == ExportScope.WORKSPACE:
        export_permission_check(membership)
        workspace = membership.workspace
    else:
        workspace = workspace_personal(user)
    try:
        with transaction.atomic():
            export = DataExport.objects.create(workspace=workspace, requested_by=user, scope=scope)
            audit_record(
                action=AuditAction.DATA_EXPORT_REQUESTED,
                user=user,
                actor=user,
                workspace=workspace,
                request=request,
                export=str(export.pk),
                scope=scope,
            )
            transaction.on_commit(lambda: export_enqueue(export_id=export.pk))
    except IntegrityError:
        raise Conflict(
            "An export of this data is already being prepared: wait for it to finish (its progress is shown "
            "below) before asking for another.",
            code="export_in_progress",
        ) from None
    return export


def export_enqueue(*, export_id) -> None:
    """Send the build to the housekeeping queue. If the broker cannot take it, the export fails at
    once with a message saying to ask again (rather than waiting for the sweep)."""
    try:
        current_app.send_task(BUILD_EXPORT_TASK, args=[str(export_id)], queue=MAINTENANCE_QUEUE, ignore_result=True)
    except Exception:
        logger.exception("could not send the build of export %s", export_id)
        DataExport.objects.filter(pk=export_id, status=ExportStatus.QUEUED).update(
            status=ExportStatus.FAILED,
            error="The export could not be started: our task queue is unavailable. Please ask again in a minute.",
            finished_at=timezone.now(),
        )


# --- reading them ----------------------------------------------------------------------------------


def _exports_of(user: User) -> QuerySet[DataExport]:
    """A person's exports, without the archives (megabytes each, read only to download)."""
    return DataExport.objects.filter(requested_by=user).defer("archive")


def exports_recent(*, user: User, workspace: Workspace, scope: str) -> list[DataExport]:
    return list(_exports_of(user).filter(workspace=workspace, scope=scope)[:RECENT_EXPORTS])


def export_of(*, user: User, export_id) -> DataExport | None:
    return _exports_of(user).filter(pk=export_id).first()


def export_token(export: DataExport) -> str:
    return signing.dumps(str(export.pk), salt=DOWNLOAD_LINK_SALT)


def export_for_download(*, token: str, user) -> DataExport | None:
    """The ready export a download link names, for the person who asked for it, until it expires;
    None for anyone else, a signed-out visitor, a tampered or stale link."""
    if not user.is_authenticated:
        return None
    try:
        export_id = signing.loads(token, salt=DOWNLOAD_LINK_SALT, max_age=timedelta(hours=settings.EXPORT_LINK_HOURS))
    except signing.BadSignature:
        return None
    return (
        DataExport.objects.select_related("workspace", "requested_by")
        .filter(pk=export_id, requested_by=user, status=ExportStatus.READY, expires_at__gt=timezone.now())
        .first()
    )


def export_download_record(*, export: DataExport, request=None) -> None:
    DataExport.objects.filter(pk=export.pk).update(downloaded_at=timezone.now())
    audit_record(
        action=AuditAction.DATA_EXPORT_DOWNLOADED,
        user=export.requested_by,
        actor=export.requested_by,
        workspace=export.workspace,
        request=request,
        export=str(export.pk),
        scope=export.scope,
    )


def export_filename(export: DataExport) -> str:
    day = f"{export.finished_at:%Y-%m-%d}"
    if export.scope == ExportScope.USER:
        return f"inkwell-my-data-{day}.zip"
    return f"inkwell-{export.workspace.slug}-{day}.zip"


# --- building one (the Celery task) ----------------------------------------------------------------


class ExportTooLarge(Exception):
    pass


class ExportTooSlow(Exception):
    """Past JOB_SOFT_TIME_LIMIT. The build keeps its own clock: Celery's time limits do not apply
    to the threads pool the workers run, and a build older than the hard limit is taken for dead."""


class _ClaimLost(Exception):
    """Another build holds the row now (or the sweep failed it): stop and write nothing."""


def _claim(export_id) -> datetime | None:
    """queued -> running, for one build. A row left running by a build that must be dead (older
    than the task's hard time limit: a worker killed mid-build, its message delivered again) is
    taken over; a duplicate delivery while the first build runs, or one for a finished export,
    claims nothing."""
    now = timezone.now()
    dead_before = now - timedelta(seconds=settings.JOB_HARD_TIME_LIMIT)
    claimed = (
        DataExport.objects.filter(pk=export_id)
        .filter(Q(status=ExportStatus.QUEUED) | Q(status=ExportStatus.RUNNING, started_at__lt=dead_before))
        .update(status=ExportStatus.RUNNING, started_at=now, progress_done=0, progress_total=0)
    )
    return now if claimed else None


def _held(export: DataExport, claim: datetime) -> QuerySet[DataExport]:
    return DataExport.objects.filter(pk=export.pk, status=ExportStatus.RUNNING, started_at=claim)


@dataclass(frozen=True)
class _Contents:
    """What goes into one export, as row sources; the build reads them in batches."""

    profile: dict
    jobs: list[QuerySet[GenerationJob]]
    usage: list[QuerySet[UsageRecord]]
    invoices: list[dict]
    audit: QuerySet[AuditEvent]

    def total(self) -> int:
        return sum(q.count() for q in self.jobs) + sum(q.count() for q in self.usage) + self.audit.count()


def _workspace_contents(export: DataExport) -> _Contents:
    workspace = export.workspace
    members = [
        {"email": m.user.email, "role": m.role, "monthly_token_cap": m.monthly_token_cap, "joined_at": m.created_at}
        for m in members_of(workspace)
    ]
    profile = {
        "scope": export.scope,
        "exported_at": timezone.now(),
        "requested_by": export.requested_by.email,
        "workspace": {
            "id": workspace.pk,
            "name": workspace.name,
            "slug": workspace.slug,
            "personal": workspace.is_personal,
            "created_at": workspace.created_at,
        },
        "members": members,
    }
    # The owner's export takes every member's jobs: no per-member selector applies.
    jobs = GenerationJob.objects.filter(workspace=workspace, deleted_at__isnull=True)
    return _Contents(
        profile=profile,
        jobs=[jobs],
        usage=[usage_records(workspace)],
        invoices=invoices_known(workspace),
        audit=AuditEvent.objects.filter(workspace=workspace),
    )


def _user_contents(export: DataExport) -> _Contents:
    user = export.requested_by
    memberships = list(memberships_of(user))
    profile = {
        "scope": export.scope,
        "exported_at": timezone.now(),
        "user": {
            "email": user.email,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "date_joined": user.date_joined,
            "last_login": user.last_login,
            "email_addresses": [
                {"email": a.email, "verified": a.verified, "primary": a.primary}
                for a in EmailAddress.objects.filter(user=user).order_by("email")
            ],
        },
        "memberships": [
            {
                "workspace": m.workspace.name,
                "personal": m.workspace.personal_of_id == user.pk,
                "role": m.role,
                "monthly_token_cap": m.monthly_token_cap,
                "joined_at": m.created_at,
            }
            for m in memberships
        ],
    }
    return _Contents(
        profile=profile,
        jobs=[jobs_of(m) for m in memberships],
        usage=[usage_records(m.workspace, user=user) for m in memberships],
        invoices=invoices_known(export.workspace),
        audit=AuditEvent.objects.filter(Q(user=user) | Q(actor=user)),
    )


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment else ""


def _job_line(job: GenerationJob) -> dict:
    return {
        "id": job.pk,
        "workspace": job.workspace.name,
        "member": job.user.email if job.user_id else DELETED_ACCOUNT,
        "source": job.source,
        "model": job.model,
        "status": job.status,
        "finish_reason": job.finish_reason,
        "error_message": job.error_message,
        "prompt": job.prompt,
        "messages": job.messages,
        "output_text": job.output_text,
        "params": {
            "max_new_tokens": job.max_new_tokens,
            "temperature": job.temperature,
            "top_p": job.top_p,
            "top_k": job.top_k,
            "repetition_penalty": job.repetition_penalty,
            "stop": job.stop,
            "seed": job.seed,
        },
        "prompt_tokens": job.prompt_tokens,
        "completion_tokens": job.completion_tokens,
        "tokens_charged": job.tokens_charged,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "texts_erased_at": job.texts_erased_at,
    }


AUDIT_COLUMNS = ["created_at", "action", "email", "actor", "workspace", "ip", "user_agent", "detail"]


def _audit_line(event: AuditEvent) -> list:
    return [
        event.created_at.isoformat(), event.action, event.email, event.actor.email if event.actor else "",
        event.workspace.name if event.workspace else "", event.ip or "", event.user_agent,
        json.dumps(event.detail, cls=DjangoJSONEncoder),
    ]  # fmt: skip


INVOICE_COLUMNS = [
    "id", "number", "status", "billing_reason", "currency", "amount_due_cents", "amount_paid_cents", "period_start",
    "period_end", "paid_at", "hosted_invoice_url",
]  # fmt: skip


def _json(value) -> str:
    return json.dumps(value, cls=DjangoJSONEncoder, ensure_ascii=False)


@dataclass
class _Archive:
    """The zip being written in memory, and the build's progress on the row."""

    export: DataExport
    claim: datetime
    buffer: io.BytesIO = field(default_factory=io.BytesIO)
    done: int = 0

    def __post_init__(self):
        self.zip = zipfile.ZipFile(self.buffer, "w", compression=zipfile.ZIP_DEFLATED)
        self.deadline = time.monotonic() + settings.JOB_SOFT_TIME_LIMIT

    def progress(self, rows: int) -> None:
        """After each batch: refuse to grow past the cap or to run past the time limit, and write
        how far the build is (only while this build still holds the row)."""
        self.done += rows
        if self.buffer.tell() > ARCHIVE_MAX_BYTES:
            raise ExportTooLarge
        if time.monotonic() > self.deadline:
            raise ExportTooSlow
        if not _held(self.export, self.claim).update(progress_done=self.done):
            raise _ClaimLost

    def text(self, name: str, content: str) -> None:
        self.zip.writestr(name, content)

    def lines(self, name: str, rows: Iterable[str]) -> None:
        with self.zip.open(name, "w") as member, io.TextIOWrapper(member, encoding="utf-8", newline="") as out:
            for row in rows:
                out.write(row)

    def csv(self, name: str, header: list[str], rows: Iterable[list]) -> None:
        with self.zip.open(name, "w") as member, io.TextIOWrapper(member, encoding="utf-8", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(header)
            writer.writerows(rows)

    def batched(self, querysets: list[QuerySet], render) -> Iterator:
        """Each row of each queryset rendered, read BATCH_SIZE at a time, with progress after each batch."""
        for queryset in querysets:
            batch = 0
            for row in queryset.iterator(chunk_size=BATCH_SIZE):
                yield render(row)
                batch += 1
                if batch == BATCH_SIZE:
                    self.progress(batch)
                    batch = 0
            if batch:
                self.progress(batch)

    def close(self) -> bytes:
        self.zip.close()
        return self.buffer.getvalue()


def _archive_build(export: DataExport, claim: datetime) -> bytes:
    contents = _user_contents(export) if export.scope == ExportScope.USER else _workspace_contents(export)
    if not _held(export, claim).update(progress_total=contents.total()):
        raise _ClaimLost
    archive = _Archive(export, claim)
    archive.text("README.txt", README)
    archive.text("profile.json", json.dumps(contents.profile, cls=DjangoJSONEncoder, ensure_ascii=False, indent=2))
    jobs = [q.select_related("user", "workspace").order_by("created_at", "pk") for q in contents.jobs]
    archive.lines("jobs.jsonl", archive.batched(jobs, lambda job: _json(_job_line(job)) + "\n"))
    archive.csv("usage.csv", USAGE_CSV_COLUMNS, archive.batched(contents.usage, usage_csv_row))
    archive.csv("invoices.csv", INVOICE_COLUMNS, ([line[c] for c in INVOICE_COLUMNS] for line in contents.invoices))
    audit = contents.audit.select_related("actor", "workspace").order_by("created_at", "pk")
    archive.csv("audit_events.csv", AUDIT_COLUMNS, archive.batched([audit], _audit_line))
    data = archive.close()
    if len(data) > ARCHIVE_MAX_BYTES:
        raise ExportTooLarge
    return data


def _export_fail(export: DataExport, claim: datetime, message: str) -> None:
    _held(export, claim).update(status=ExportStatus.FAILED, error=message, finished_at=timezone.now())


def _export_ready(export: DataExport, claim: datetime, data: bytes) -> None:
    """running -> ready with the archive (sealed on save, so written through the instance under
    a row lock rather than by update()); older archives of the same kind are deleted."""
    now = timezone.now()
    with transaction.atomic():
        row = _held(export, claim).select_for_update().defer("archive").first()
        if row is None:
            return
        row.archive = data
        row.archive_bytes = len(data)
        row.status = ExportStatus.READY
        row.progress_done = row.progress_total
        row.finished_at = now
        row.expires_at = now + timedelta(hours=settings.EXPORT_LINK_HOURS)
        row.save(update_fields=["archive", "archive_bytes", "status", "progress_done", "finished_at", "expires_at"])
        DataExport.objects.filter(
            requested_by=export.requested_by_id, workspace=export.workspace_id, scope=export.scope,
            status=ExportStatus.READY,
        ).exclude(pk=export.pk).update(status=ExportStatus.EXPIRED, archive=None)  # fmt: skip


def export_build(*, export_id) -> None:
    """Build the archive of a queued export. A duplicate or late delivery claims nothing and stops;
    every way a build ends leaves the row ready or failed with a message for the person."""
    claim = _claim(export_id)
    if claim is None:
        return
    export = DataExport.objects.select_related("workspace", "requested_by").defer("archive").get(pk=export_id)
    try:
        data = _archive_build(export, claim)
    except _ClaimLost:
        logger.info("export %s: another build holds it now; stopping", export_id)
        return
    except ExportTooLarge:
        limit = ARCHIVE_MAX_BYTES // (1024 * 1024)
        _export_fail(
            export,
            claim,
            f"The export is larger than {limit} MB compressed, the most one archive holds. Delete jobs you no "
            "longer need, or contact support for a bulk export.",
        )
        return
    except (ExportTooSlow, SoftTimeLimitExceeded):
        _export_fail(export, claim, "The export took too long to prepare. Please ask again, or contact support.")
        return
    except Exception:
        logger.exception("export %s failed", export_id)
        _export_fail(
            export, claim, "The export failed on our side; nothing was kept. Please ask again in a few minutes."
        )
        return
    _export_ready(export, claim, data)


# --- housekeeping (saas/maintenance.py) ------------------------------------------------------------


def exports_sweep(*, now: datetime | None = None) -> int:
    """Delete the archives whose link has expired, and fail the exports that never finished (their
    message lost with the broker, their worker dead and never redelivered): the person sees why
    and may ask again. Returns how many exports changed."""
    now = now or timezone.now()
    expired = DataExport.objects.filter(status=ExportStatus.READY, expires_at__lte=now).update(
        status=ExportStatus.EXPIRED, archive=None
    )
    # Long enough for a delivery, a build, a worker's death, the redelivery and a second build.
    stalled_before = now - timedelta(seconds=settings.BROKER_VISIBILITY_TIMEOUT + 2 * settings.JOB_HARD_TIME_LIMIT)
    stalled = DataExport.objects.filter(status__in=ACTIVE_STATUSES, created_at__lt=stalled_before).update(
        status=ExportStatus.FAILED,
        error="The export did not finish (our servers were busy or restarted). Please ask again.",
        finished_at=now,
    )
    return expired + stalled


# --- pages -----------------------------------------------------------------------------------------


def export_status_body(export: DataExport) -> dict:
    ready = export.status == ExportStatus.READY and export.expires_at > timezone.now()
    return {
        "id": str(export.pk),
        "status": export.status,
        "status_display": export.get_status_display(),
        "progress_done": export.progress_done,
        "progress_total": export.progress_total,
        "error": export.error,
        "archive_bytes": export.archive_bytes,
        "expires_at": export.expires_at,
        "download_url": reverse("export_download", args=[export_token(export)]) if ready else None,
    }


def _export_page(request, *, scope: str, workspace: Workspace):
    if request.method == "POST":
        return _export_post(request, scope=scope)
    rows = [export_status_body(export) | {"export": export} for export in exports_recent(
        user=request.user, workspace=workspace, scope=scope
    )]  # fmt: skip
    return render(
        request,
        "saas/export.html",
        {
            "scope": scope,
            "workspace": workspace,
            "rows": rows,
            "busy": any(row["export"].is_active for row in rows),
            "link_hours": settings.EXPORT_LINK_HOURS,
            "max_mb": ARCHIVE_MAX_BYTES // (1024 * 1024),
        },
    )


@reauthentication_required
def _export_post(request, *, scope: str):
    try:
        export_request(user=request.user, scope=scope, membership=request.membership, request=request)
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(
            request,
            "Your export is being prepared; this page shows its progress. The download link works for you "
            f"only, for {settings.EXPORT_LINK_HOURS} hours once it is ready.",
        )
    return redirect(request.path)


@member_required()
def workspace_export(request):
    """The current workspace's export: its owner's alone (others get a 403 saying so)."""
    try:
        export_permission_check(request.membership)
    except NotAllowed as refusal:
        raise PermissionDenied(refusal.message) from None
    return _export_page(request, scope=ExportScope.WORKSPACE, workspace=request.membership.workspace)


@login_required
def account_export(request):
    return _export_page(request, scope=ExportScope.USER, workspace=workspace_personal(request.user))


@login_required
def export_status(request, export_id):
    """What the export page polls while an export is being built (another person's: 404)."""
    export = export_of(user=request.user, export_id=export_id)
    if export is None:
        raise Http404("No such export.")
    return JsonResponse(export_status_body(export))


def export_download(request, token: str):
    """The archive, for the person who asked, while the link is valid; 404 for anyone else."""
    export = export_for_download(token=token, user=request.user)
    if export is None:
        raise Http404("No such export, or its link has expired.")
    export_download_record(export=export, request=request)
    response = HttpResponse(export.archive, content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{export_filename(export)}"'
    response["Cache-Control"] = "private, no-store"
    return response
