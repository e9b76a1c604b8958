"""Regressions found in review: each of these once failed (a 500, a wrong charge, a wrong plan)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.apikeys import api_key_create
from billing.models import BillingCustomer, QuotaPeriod, Subscription, WebhookEvent
from inference.models import GenerationJob, Worker
from inference.services import job_claim, job_submit, jobs_sweep
from tests.billing import stripe_fakes as fake
from tests.factories import PlanFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def plans(tiny_model_path):
    free = PlanFactory(slug="free", name="Free", is_default=True, price_cents=0, api_access=True)
    pro = PlanFactory(slug="pro", name="Pro", price_cents=1900, stripe_price_id="price_New0001",
                      stripe_product_id="prod_TestPro0001", monthly_token_allowance=100_000)  # fmt: skip
    return free, pro


def _post_live(url: str, key: str, body: dict) -> int:
    """The OpenAI endpoints are async views: exercise them through the real server."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.django_db(transaction=True)
def test_a_read_only_key_cannot_generate_through_the_openai_endpoints(plans, web_server):
    _, raw = api_key_create(user=UserFactory(), name="ro", scope="read")

    status = _post_live(web_server.url + "/v1/completions", raw, {"model": "inkwell-tiny", "prompt": "Hi"})

    assert status == 403
    assert not GenerationJob.objects.exists()


def test_a_subscriber_on_an_archived_price_is_found_through_the_plans_product(client, plans):
    user = UserFactory(email="pro@example.com")
    BillingCustomer.objects.create(user=user, stripe_customer_id="cus_TestCustomer0001")

    response = fake.deliver(client, fake.event("customer.subscription.updated", fake.subscription()))

    assert response.status_code == 200
    assert Subscription.objects.get(user=user).plan == plans[1]


def test_of_two_events_in_one_second_incomplete_never_undoes_active(client, plans):
    user = UserFactory(email="pro@example.com")
    BillingCustomer.objects.create(user=user, stripe_customer_id="cus_TestCustomer0001")
    now = int(time.time())

    fake.deliver(client, fake.event("customer.subscription.updated", fake.subscription(status="active"), created=now))
    fake.deliver(
        client, fake.event("customer.subscription.created", fake.subscription(status="incomplete"), created=now)
    )

    assert Subscription.objects.get(user=user).status == "active"


def test_events_about_a_deleted_account_are_acknowledged_and_ignored(client, plans):
    gone = fake.deliver(client, fake.event("customer.subscription.deleted", fake.subscription(status="canceled")))
    invoice = fake.deliver(client, fake.event("invoice.paid", fake.invoice()))

    assert (gone.status_code, invoice.status_code) == (200, 200)
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {"ignored"}
    assert not Subscription.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_stream_options_that_are_not_an_object_are_refused_before_any_job(plans, web_server):
    _, raw = api_key_create(user=UserFactory(), name="k")

    body = {"model": "inkwell-tiny", "prompt": "Hi", "stream_options": True}
    assert _post_live(web_server.url + "/v1/completions", raw, body) == 400
    assert not GenerationJob.objects.exists()


def test_rerun_with_a_malformed_id_is_a_404(client, plans):
    client.force_login(UserFactory())

    assert client.get("/generate/?from=abc").status_code == 404
    assert client.get("/generate/?continue=abc").status_code == 404


def test_the_token_counter_refuses_a_malformed_conversation(client, plans):
    client.force_login(UserFactory())

    for history in ("5", '{"a": 1}', '[{"role": 1}]'):
        response = client.post(
            "/generate/count/", {"model": "inkwell-tiny", "mode": "chat", "history": history, "message": "Hi"}
        )
        assert response.status_code == 400


def test_a_stopped_job_whose_worker_died_is_not_run_again(plans, settings):
    settings.WORKER_STALE_SECONDS = 1
    user = UserFactory()
    job = job_submit(user=user, prompt="Hello", max_new_tokens=50)
    job_claim(job_id=job.pk, worker="dead/1")
    Worker.objects.create(name="dead/1", hostname="h", pid=1, started_at=timezone.now(),
                          last_heartbeat_at=timezone.now() - timedelta(minutes=5))  # fmt: skip
    GenerationJob.objects.filter(pk=job.pk).update(
        cancel_requested_at=timezone.now(), started_at=timezone.now() - timedelta(minutes=1)
    )

    report = jobs_sweep()

    job.refresh_from_db()
    assert report.cancelled == [str(job.pk)] and report.requeued == []
    assert (job.status, job.tokens_charged) == ("cancelled", 0)
    period = QuotaPeriod.objects.get(user=user)
    assert (period.reserved, period.used) == (0, 0)


def test_a_signed_in_user_without_api_access_cannot_use_the_api_by_session(client, plans):
    plans[0].api_access = False
    plans[0].save()
    client.force_login(UserFactory())

    response = client.get("/api/v1/jobs")

    assert response.status_code == 403
