from __future__ import annotations

import json
import zipfile

import pytest
from playwright.sync_api import expect

from saas.celery import MAINTENANCE_QUEUE
from saas.celery import app as celery_app
from saas.models import DataExport, ExportStatus
from tests.e2e.helpers import sign_in
from tests.factories import PASSWORD, JobFactory, UserFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_export_own_data_watch_it_prepare_and_download_it(page, web_server, celery_worker, default_plan, artifacts_dir):
    person = UserFactory(email="exporter@example.com")
    job = JobFactory(user=person, finished=True, prompt="A lighthouse keeper", output_text=" EXPORT-MARKER-7f3a")
    refused = []
    page.on("console", lambda message: message.type == "error" and refused.append(message.text))

    sign_in(page, web_server.url, person.email)
    page.goto(web_server.url + "/account/")
    page.get_by_role("link", name="Export your data…").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Export your data")
    # The worker holds off the housekeeping queue until the page shows the export waiting, so the
    # page, not a reload, must follow it to the end.
    assert celery_app.control.cancel_consumer(MAINTENANCE_QUEUE, reply=True, timeout=10)
    page.get_by_role("button", name="Prepare an export").click()

    # Sensitive: the password again first, then the request goes through.
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_text("Your export is being prepared")).to_be_visible()
    row = page.locator("[data-testid=exports-table] tbody tr").first
    expect(row.locator("[data-export-status]")).to_have_text("Queued")
    expect(page.get_by_role("button", name="An export is being prepared…")).to_be_disabled()
    assert row.get_by_role("link", name="Download").count() == 0  # hidden until ready

    assert celery_app.control.add_consumer(MAINTENANCE_QUEUE, reply=True, timeout=10)
    expect(row.locator("[data-export-status]")).to_have_text("Ready", timeout=60_000)
    bar = row.locator("progress")
    assert bar.evaluate("bar => bar.value === bar.max && bar.max > 0")
    expect(page.get_by_role("button", name="Prepare an export")).to_be_enabled()
    page.screenshot(path=str(artifacts_dir / "export-ready.png"), full_page=True)

    with page.expect_download() as waiting:
        row.get_by_role("link", name="Download").click()
    download = waiting.value
    assert download.suggested_filename.startswith("inkwell-my-data-") and download.suggested_filename.endswith(".zip")
    with zipfile.ZipFile(download.path()) as archive:
        lines = [json.loads(line) for line in archive.read("jobs.jsonl").decode().splitlines()]
    assert [(line["id"], line["output_text"]) for line in lines] == [(str(job.pk), " EXPORT-MARKER-7f3a")]
    assert DataExport.objects.get().status == ExportStatus.READY
    assert DataExport.objects.get().downloaded_at is not None
    assert not refused, refused
