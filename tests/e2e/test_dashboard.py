"""A subscriber's day in real Chromium: generate, watch the stream, stop, run out of tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from accounts.models import User
from billing.models import QuotaPeriod
from billing.selectors import calendar_month
from inference.models import GenerationJob
from tests.e2e.helpers import generate, sign_in, verification_link
from tests.factories import PASSWORD, PlanFactory, QuotaPeriodFactory, UserFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def free_plan(db, tiny_model_path):
    return PlanFactory(
        slug="free", name="Free", is_default=True, price_cents=0, monthly_token_allowance=50_000,
        max_new_tokens=1000, max_prompt_tokens=500, max_concurrent_jobs=4, requests_per_minute=60,
    )  # fmt: skip


def test_sign_up_generate_watch_the_stream_and_find_it_in_history(
    page, browser, web_server, celery_worker, free_plan, artifacts_dir
):
    email = "writer@example.com"
    page.goto(web_server.url + "/accounts/signup/")
    page.get_by_label("Email").fill(email)
    page.locator("#id_password1").fill(PASSWORD)
    page.locator("#id_password2").fill(PASSWORD)
    page.get_by_role("button", name="Sign Up").click()
    page.goto(verification_link(web_server.mails(), email))
    page.get_by_role("button", name="Confirm").click()
    sign_in(page, web_server.url, email)

    page.goto(web_server.url + "/generate/")
    expect(page.get_by_test_id("quota-meter")).to_contain_text("0 / 50,000")
    page.get_by_role("textbox", name="Prompt").fill("The river runs past the old mill")
    expect(page.get_by_test_id("token-counter")).to_contain_text("/ 500 prompt tokens")
    generate(page, "The river runs past the old mill", 40)

    expect(page.get_by_test_id("job-status")).to_have_text("succeeded", timeout=60_000)
    job = GenerationJob.objects.get(user__email=email)
    expect(page.get_by_test_id("output-text")).to_have_text(job.output_text)
    assert job.output_text and job.tokens_charged == job.prompt_tokens + job.completion_tokens
    expect(page.get_by_test_id("quota-meter")).to_contain_text(f"{job.tokens_charged} / 50,000")
    expect(page.get_by_test_id("job-numbers")).to_contain_text(f"charged {job.tokens_charged}")
    page.screenshot(path=str(artifacts_dir / "generate-desktop.png"), full_page=True)

    page.get_by_role("link", name="History").first.click()
    expect(page.get_by_test_id("history")).to_contain_text("The river runs past the old mill")
    page.get_by_role("link", name="The river runs past the old mill").click()
    with page.expect_download() as download:
        page.get_by_role("link", name="Download .txt").click()
    assert Path(download.value.path()).read_text() == job.output_text

    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone_page = phone.new_page()
    phone_page.context.add_cookies(page.context.cookies())
    phone_page.goto(web_server.url + "/generate/")
    assert phone_page.evaluate("document.documentElement.scrollWidth") <= 390
    phone_page.screenshot(path=str(artifacts_dir / "generate-phone.png"), full_page=True)
    phone_page.goto(web_server.url + "/usage/")
    expect(phone_page.get_by_test_id("period-total")).to_have_text(str(job.tokens_charged))
    phone.close()
    page.goto(web_server.url + "/usage/")
    page.screenshot(path=str(artifacts_dir / "usage.png"), full_page=True)


def test_stopping_a_generation_keeps_the_text_and_charges_only_what_was_generated(
    page, web_server, celery_worker, free_plan
):
    user = UserFactory(email="stopper@example.com")
    sign_in(page, web_server.url, user.email)
    page.goto(web_server.url + "/generate/")

    generate(page, "Once upon a time", 1000)
    expect(page.get_by_test_id("output-text")).not_to_be_empty(timeout=30_000)
    page.get_by_role("button", name="Stop").click()

    expect(page.get_by_test_id("job-status")).to_have_text("cancelled", timeout=30_000)
    job = GenerationJob.objects.get(user=user)
    assert 0 < job.completion_tokens < 1000
    expect(page.get_by_test_id("output-text")).to_have_text(job.output_text)
    expect(page.get_by_test_id("quota-meter")).to_contain_text(f"{job.tokens_charged:,} / 50,000")
    period = QuotaPeriod.objects.get(workspace__personal_of=user)
    assert (period.used, period.reserved) == (job.prompt_tokens + job.completion_tokens, 0)


def test_with_no_tokens_left_the_form_says_so_and_when_they_reset(page, web_server, free_plan):
    user = UserFactory(email="spent@example.com")
    sign_in(page, web_server.url, user.email)
    page.goto(web_server.url + "/generate/")
    period_start, period_end = calendar_month(timezone.now())
    QuotaPeriodFactory(user=user, period_start=period_start, period_end=period_end, allowance=50_000, used=50_000)

    generate(page, "Hello", 20)

    expect(page.get_by_test_id("form-error")).to_contain_text(
        "Not enough tokens left in this workspace's pool this period"
    )
    expect(page.get_by_test_id("form-error")).to_contain_text("0 remain until the reset on")
    assert not GenerationJob.objects.filter(user=user).exists()
    assert User.objects.filter(email=user.email).exists()
