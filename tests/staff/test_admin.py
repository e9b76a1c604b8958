"""Staff tools: the admin, the business dashboard, the audit log, retention and suspension."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.workspaces import membership_personal, workspace_personal
from billing.models import QuotaPeriod, QuotaTopUp, Subscription, UsageRecord, WebhookEvent
from billing.selectors import entitlements_for
from core.models import AuditEvent
from inference.models import GenerationJob
from inference.outcome import JobOutcome
from inference.services import job_claim, job_finish, job_submit, job_texts_erase_expired
from staff.selectors import business_numbers
from tests.billing import stripe_fakes as fake
from tests.factories import ApiKeyFactory, JobFactory, PlanFactory, SubscriptionFactory, UserFactory

pytestmark = pytest.mark.django_db

STAFF_URLS = [
    "/staff/business/",
    "/admin/",
    "/admin/accounts/user/",
    "/admin/inference/generationjob/",
    "/admin/billing/webhookevent/",
    "/admin/core/auditevent/",
]
# What each staff page shows at its top, so a test can tell the page itself from an error page.
STAFF_PAGE_SHOWS = {
    "/staff/business/": "<h1>Business</h1>",
    "/admin/": "Site administration",
    "/admin/accounts/user/": "Select user to change",
    "/admin/inference/generationjob/": "Select generation job to change",
    "/admin/billing/webhookevent/": "Select webhook event to change",
    "/admin/core/auditevent/": "Select audit event to view",
}


@pytest.fixture
def plans(tiny_model_path):
    free = PlanFactory(slug="free", name="Free", is_default=True, price_cents=0, monthly_token_allowance=1000,
                       retention_days=30, api_access=True)  # fmt: skip
    pro = PlanFactory(slug="pro", name="Pro", price_cents=1900, stripe_price_id="price_TestPro0001",
                      monthly_token_allowance=100_000)  # fmt: skip
    team = PlanFactory(slug="team", name="Team", price_cents=9900, stripe_price_id="price_T", monthly_token_allowance=1)
    return free, pro, team


@pytest.fixture
def default_plan(plans):
    return plans[0]


@pytest.fixture
def staff(client, staff_user):
    client.force_login(staff_user)
    return staff_user


def _finish(user, *, status="length", completion=4, run_ms=None):
    job = job_submit(member=membership_personal(user), prompt="Hello there", max_new_tokens=10)
    claimed = job_claim(job_id=job.pk, worker="w")
    job_finish(job=claimed, outcome=JobOutcome(text="text", completion_tokens=completion, finish_reason=status))
    if run_ms is not None:
        UsageRecord.objects.filter(job=job).update(run_ms=run_ms)
    return GenerationJob.objects.get(pk=job.pk)


@pytest.mark.parametrize("url", STAFF_URLS)
def test_a_non_staff_user_gets_no_staff_page(client, plans, url):
    client.force_login(UserFactory(email="user@example.com"))

    response = client.get(url)

    assert response.status_code == 404
    page = response.content.decode()
    assert "There is nothing here, or it is not yours to see." in page  # the site's own 404
    assert STAFF_PAGE_SHOWS[url] not in page


@pytest.mark.parametrize("url", STAFF_URLS)
def test_staff_pages_open_for_staff(client, plans, staff, url):
    response = client.get(url)

    assert response.status_code == 200
    assert STAFF_PAGE_SHOWS[url] in response.content.decode()


def test_the_dashboard_numbers_equal_sums_computed_independently(client, plans, staff):
    _, pro, team = plans
    now = timezone.now()
    subscribers = [SubscriptionFactory(plan=pro) for _ in range(3)] + [SubscriptionFactory(plan=team)]
    SubscriptionFactory(plan=pro, status="canceled", canceled_at=now)  # churned this month
    SubscriptionFactory(plan=team, is_comp=True)  # comped: no revenue
    users = [UserFactory(email=f"u{i}@example.com") for i in range(3)]
    jobs = [_finish(users[0], run_ms=3600_000), _finish(users[1], run_ms=1800_000), _finish(users[2], status="error")]
    JobFactory(user=users[0], quota_period=jobs[0].quota_period)  # still queued

    numbers = business_numbers()
    page = client.get("/staff/business/").content.decode()

    expected_mrr = sum(s.plan.price_cents for s in subscribers) / 100
    assert numbers.mrr == expected_mrr == 156.0
    assert numbers.subscribers == 4
    assert numbers.by_plan["pro"].subscribers == 3 and numbers.by_plan["team"].subscribers == 1
    assert numbers.new_subscribers == 5  # every non-comp subscription above was created this month
    assert numbers.churned_subscribers == 1
    assert numbers.queue_depth == 1
    assert numbers.failed_rate == pytest.approx(1 / 3)
    free_row = numbers.by_plan["free"]
    assert free_row.gpu_seconds == pytest.approx(5400.0 + sum(
        u.run_ms for u in UsageRecord.objects.filter(job=jobs[2])) / 1000)  # fmt: skip
    assert free_row.tokens == sum(j.tokens_charged for j in jobs)
    assert free_row.cost == pytest.approx(free_row.gpu_seconds / 3600 * 2.50)
    assert sum(t for _, t in numbers.tokens_per_day) == sum(j.tokens_charged for j in jobs)
    assert 'data-testid="mrr">156.00<' in page


def test_a_top_up_raises_the_allowance_once_and_is_audited(client, plans, staff):
    user = UserFactory(email="needs-more@example.com")

    response = client.post(
        "/admin/accounts/user/",
        {"action": "grant_a_token_top-up", "_selected_action": [user.pk], "tokens": 500, "reason": "support #12",
         "apply": "1"},
    )  # fmt: skip

    assert response.status_code == 302
    assert QuotaPeriod.objects.get(workspace__personal_of=user).allowance == 1000 + 500
    assert QuotaTopUp.objects.get(workspace__personal_of=user).reason == "support #12"
    event = AuditEvent.objects.get(action="top_up")
    assert (event.user, event.actor, event.detail["tokens"]) == (user, staff, 500)


def test_the_operator_command_tops_up_the_users_personal_workspace(plans):
    user = UserFactory(email="needs-more@example.com")
    UserFactory(email="bystander@example.com")

    call_command("user_admin", user.email, "topup", "500", "support #13")

    assert QuotaPeriod.objects.get(workspace__personal_of=user).allowance == 1000 + 500
    assert QuotaTopUp.objects.get().workspace == workspace_personal(user)
    assert AuditEvent.objects.get(action="top_up").workspace == workspace_personal(user)


def test_suspension_stops_a_queued_job_and_the_users_keys(plans):
    user = UserFactory(email="abuser@example.com")
    queued = job_submit(member=membership_personal(user), prompt="Hello", max_new_tokens=10)
    raw = ApiKeyFactory(user=user).raw
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    before = client.get("/api/v1/jobs")
    assert before.status_code == 200
    assert [job["id"] for job in before.json()["results"]] == [str(queued.pk)]

    call_command("user_admin", user.email, "suspend", "spam")

    queued.refresh_from_db()
    assert queued.status == "cancelled"
    assert QuotaPeriod.objects.get(workspace__personal_of=user).reserved == 0
    refused = client.get("/api/v1/jobs")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "account_disabled"
    assert AuditEvent.objects.filter(action="suspended", user=user).exists()
    call_command("user_admin", user.email, "unsuspend")
    after = client.get("/api/v1/jobs")
    assert after.status_code == 200
    assert [(job["id"], job["status"]) for job in after.json()["results"]] == [(str(queued.pk), "cancelled")]


def test_a_suspended_user_cannot_sign_in(client, plans):
    user = UserFactory(email="blocked@example.com")
    call_command("user_admin", user.email, "suspend", "chargeback")

    client.post("/accounts/login/", {"login": user.email, "password": "correct-horse-battery-staple"})

    assert "_auth_user_id" not in client.session


def test_retention_erases_old_texts_and_keeps_usage_totals(plans):
    user = UserFactory(email="old@example.com")
    old, recent = _finish(user), _finish(user)
    GenerationJob.objects.filter(pk=old.pk).update(finished_at=timezone.now() - timedelta(days=31))
    totals_before = list(UsageRecord.objects.order_by("pk").values_list("tokens_charged", flat=True))

    assert job_texts_erase_expired() == 1

    old.refresh_from_db()
    recent.refresh_from_db()
    assert (old.prompt, old.output_text, old.texts_erased_at is not None) == ("", "", True)
    assert recent.output_text == "text"
    assert list(UsageRecord.objects.order_by("pk").values_list("tokens_charged", flat=True)) == totals_before
    assert job_texts_erase_expired() == 0


def test_replaying_a_failed_webhook_event_from_the_admin_applies_it_once(client, plans, staff):
    from billing.models import BillingCustomer

    user = UserFactory(email="pro@example.com")
    BillingCustomer.objects.create(workspace=workspace_personal(user), stripe_customer_id="cus_TestCustomer0001")
    payload = fake.event("customer.subscription.created", fake.subscription(price="price_unknown", metadata={}))
    assert fake.deliver(client, payload).status_code == 500
    event = WebhookEvent.objects.get()
    plans[1].stripe_price_id = "price_unknown"
    plans[1].save()

    for _ in range(2):
        client.post("/admin/billing/webhookevent/", {"action": "replay", "_selected_action": [event.pk]})

    event.refresh_from_db()
    assert event.status == "processed"
    assert Subscription.objects.filter(workspace__personal_of=user).count() == 1
    assert AuditEvent.objects.filter(action="webhook_failed").count() == 1
    assert AuditEvent.objects.filter(action="webhook_replayed").count() == 1


@pytest.mark.parametrize(
    "url", ["/admin/accounts/user/", "/admin/inference/generationjob/", "/admin/billing/subscription/",
            "/admin/billing/usagerecord/", "/admin/accounts/apikey/", "/admin/core/auditevent/"]
)  # fmt: skip
def test_admin_list_pages_make_no_query_per_row(client, plans, staff, url):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url).status_code == 200
        return len(captured)

    def add_rows(n: int) -> None:
        for _ in range(n):
            user = UserFactory()
            _finish(user)
            SubscriptionFactory(user=user, plan=plans[1])
            ApiKeyFactory(user=user)

    add_rows(1)
    queries()  # warm per-process caches (content types, permissions)
    few = queries()
    add_rows(4)
    assert queries() == few


def test_users_see_their_own_security_events(client, plans):
    user = UserFactory(email="me@example.com")
    client.post("/accounts/login/", {"login": user.email, "password": "correct-horse-battery-staple"})
    ApiKeyFactory(user=user, name="laptop")

    page = client.get("/account/").content.decode()

    assert "Signed in" in page and "API key created" in page
    assert AuditEvent.objects.filter(action="login", user=user).exclude(ip=None).exists()


def test_a_comped_plan_applies_without_stripe_and_brings_no_revenue(plans):
    user = UserFactory(email="partner@example.com")

    call_command("user_admin", user.email, "comp", "pro", "30")

    assert entitlements_for(workspace_personal(user)).plan.slug == "pro"
    assert business_numbers().mrr == 0


def test_the_privacy_page_states_each_plans_retention(client, plans):
    page = client.get("/privacy/").content.decode()

    assert "erased 30 days after a job finishes" in page
    assert "kept until you delete them" in page


def test_the_user_page_shows_plan_period_usage_and_jobs(client, plans, staff):
    user = UserFactory(email="customer@example.com")
    job = _finish(user)

    page = client.get(f"/admin/accounts/user/{user.pk}/change/").content.decode()

    assert "Free: no subscription" in page
    assert f"{job.tokens_charged:,} used + 0 reserved of 1,000" in page
    assert "1 jobs" in page
