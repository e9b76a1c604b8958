"""Deleting an account: all or nothing as the user sees it, Stripe told first (every subscription
Stripe holds, then the customer and its cards), and afterwards no row holds the email."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import redis
from django.apps import apps
from django.conf import settings
from django.db import models
from django.db.models.functions import Cast
from django.utils import timezone

from accounts.models import User, Workspace, WorkspaceRole
from accounts.services import pseudonym
from accounts.teams import member_add, workspace_create
from accounts.workspaces import SESSION_KEY, members_of, membership_personal, workspace_personal
from billing.models import BillingCustomer, QuotaPeriod, Subscription, UsageRecord, WebhookEvent
from billing.services.personal_data import webhook_payloads_scrub_expired
from core.audit import audit_record
from core.models import AuditAction, AuditEvent
from inference import streams
from inference.services import job_submit
from tests.billing import stripe_fakes as fake
from tests.factories import PASSWORD, ApiKeyFactory, PlanFactory, SubscriptionFactory, UserFactory

pytestmark = pytest.mark.django_db
EMAIL = "pro@example.com"


@pytest.fixture
def member(client, tiny_model_path):
    PlanFactory(slug="free", name="Free", is_default=True, price_cents=0, monthly_token_allowance=10_000)
    pro = PlanFactory(slug="pro", name="Pro", price_cents=1900, stripe_price_id="price_TestPro0001")
    user = UserFactory(email=EMAIL)
    BillingCustomer.objects.create(workspace=workspace_personal(user), stripe_customer_id="cus_TestCustomer0001")
    SubscriptionFactory(user=user, plan=pro, stripe_subscription_id="sub_1QfTestPro000001")
    client.force_login(user)
    # Deleting asks for the password again (allauth's re-authentication): typed a moment ago.
    assert client.post("/accounts/reauthenticate/", {"password": PASSWORD}).status_code == 302
    return user


def _rows_holding(text: str) -> list[str]:
    """Every (model, field) whose stored text or JSON contains ``text``, across the whole schema."""
    found = []
    for model in apps.get_models():
        for field in model._meta.concrete_fields:
            if isinstance(field, models.CharField | models.TextField):
                lookup = model._default_manager.filter(**{f"{field.name}__icontains": text})
            elif isinstance(field, models.JSONField):
                lookup = model._default_manager.annotate(_text=Cast(field.name, models.TextField())).filter(
                    _text__icontains=text
                )
            else:
                continue
            if lookup.exists():
                found.append(f"{model._meta.label}.{field.name}")
    return found


def test_deleting_asks_stripe_cancels_every_live_subscription_and_deletes_the_customer(client, member, live_stripe):
    elsewhere = fake.subscription(id="sub_NotInMirror001", status="past_due")
    ended = fake.subscription(id="sub_Ended00000001", status="canceled")
    stripe = live_stripe(
        {
            ("GET", "/v1/subscriptions"): {"object": "list", "data": [elsewhere, ended], "has_more": False},
            ("DELETE", "/v1/subscriptions/"): {"object": "subscription", "status": "canceled"},
            ("DELETE", "/v1/customers/cus_TestCustomer0001"): {"id": "cus_TestCustomer0001", "deleted": True},
        }
    )

    response = client.post("/account/delete/", {"confirm_email": EMAIL})

    assert response.status_code == 302 and response.url == "/"
    calls = [(r["method"], r["path"]) for r in stripe.requests]
    assert ("DELETE", "/v1/subscriptions/sub_NotInMirror001") in calls
    assert ("DELETE", "/v1/subscriptions/sub_Ended00000001") not in calls
    assert calls[-1] == ("DELETE", "/v1/customers/cus_TestCustomer0001")
    assert not User.objects.filter(email=EMAIL).exists()
    assert "Your account and its data were deleted" in client.get(response.url).content.decode()


def test_a_stripe_failure_deletes_nothing_and_keeps_the_user_signed_in(client, member, live_stripe):
    live_stripe({})  # Stripe answers every call with an error

    response = client.post("/account/delete/", {"confirm_email": EMAIL})

    assert response.status_code == 502
    assert "Your account was not deleted" in response.content.decode()
    assert User.objects.filter(email=EMAIL).exists()
    assert Subscription.objects.get(workspace__personal_of=member).status == "active"
    account = client.get("/account/")
    assert account.status_code == 200  # still signed in
    assert EMAIL in account.content.decode()


def test_deleting_is_refused_while_the_user_owns_a_team_with_other_members(client, member, live_stripe):
    team = workspace_create(owner=member, name="Acme")
    member_add(workspace=team, user=UserFactory(email="colleague@example.com"), role=WorkspaceRole.MEMBER, seats=5)
    stripe = live_stripe({})

    response = client.post("/account/delete/", {"confirm_email": EMAIL})

    assert response.status_code == 409
    page = response.content.decode()
    assert "Your account was not deleted" in page and "transfer its ownership" in page
    assert stripe.requests == []  # refused before Stripe is told anything
    assert User.objects.filter(email=EMAIL).exists()
    assert Workspace.objects.filter(pk=team.pk).exists()
    assert Subscription.objects.get(workspace__personal_of=member).status == "active"


def test_deleting_removes_the_users_own_workspaces_and_leaves_the_teams_they_joined(client, member):
    own_team = workspace_create(owner=member, name="Solo")
    joined = workspace_create(owner=UserFactory(email="boss@example.com"), name="Boss Co")
    member_add(workspace=joined, user=member, role=WorkspaceRole.MEMBER, seats=5)
    personal = workspace_personal(member)

    response = client.post("/account/delete/", {"confirm_email": EMAIL})

    assert response.status_code == 302
    assert not Workspace.objects.filter(pk__in=[personal.pk, own_team.pk]).exists()
    assert list(members_of(joined).values_list("user__email", flat=True)) == ["boss@example.com"]


def test_a_deleted_members_work_in_a_team_stays_in_the_teams_numbers_without_them(client, member, settings):
    settings.BILLING_SANDBOX = True
    boss = UserFactory(email="boss@example.com")
    joined = workspace_create(owner=boss, name="Boss Co")
    SubscriptionFactory(workspace=joined, plan=PlanFactory(slug="team", per_seat=True), seats=5, paid_seats=5)
    membership = member_add(workspace=joined, user=member, role=WorkspaceRole.MEMBER, seats=5)
    job = job_submit(member=membership, prompt="Team notes", max_new_tokens=5)
    pool = QuotaPeriod.objects.get(workspace=joined)

    response = client.post("/account/delete/", {"confirm_email": EMAIL})

    assert response.status_code == 302
    job.refresh_from_db()
    assert (job.user_id, job.workspace_id, job.status) == (None, joined.pk, "cancelled")
    record = UsageRecord.objects.get(job=job)
    assert record.user_id is None and record.workspace_id == joined.pk
    pool.refresh_from_db()
    assert pool.reserved == 0 and pool.used == job.tokens_charged
    client.force_login(boss)
    session = client.session
    session[SESSION_KEY] = joined.pk
    session.save()
    lines = client.get("/usage/export.csv").content.decode().splitlines()
    assert lines[1].split(",")[2] == "(deleted account)"
    assert EMAIL not in "\n".join(lines)


@pytest.mark.django_db(transaction=True)  # the streams go when the deletion commits
def test_after_deletion_no_row_holds_the_email_and_the_streams_are_gone(client, member):
    job = job_submit(member=membership_personal(member), prompt="Once upon a time", max_new_tokens=10)
    streams.publish_start(job.id, attempt=1)
    streams.publish_delta(job, "Some text")
    ApiKeyFactory(user=member, name="laptop")
    audit_record(action=AuditAction.LOGIN_FAILED, user=None, email=EMAIL)
    invoice = json.loads(fake.event("invoice.paid", fake.invoice()))
    WebhookEvent.objects.create(
        stripe_event_id=invoice["id"], type="invoice.paid", stripe_created_at=timezone.now(), payload=invoice,
        status="processed",
    )  # fmt: skip
    assert _rows_holding(EMAIL)  # the check can see the email where it is

    response = client.post("/account/delete/", {"confirm_email": EMAIL})

    assert response.status_code == 302 and response.url == "/"
    assert _rows_holding(EMAIL) == []
    assert AuditEvent.objects.filter(action=AuditAction.ACCOUNT_DELETED, email=pseudonym(EMAIL)).exists()
    assert AuditEvent.objects.filter(action=AuditAction.LOGIN_FAILED, email=pseudonym(EMAIL)).exists()
    stored = WebhookEvent.objects.get(stripe_event_id=invoice["id"]).payload
    assert stored["data"]["object"]["customer_email"] is None
    assert stored["data"]["object"]["amount_paid"] == 1900  # the books keep the amounts
    client_redis = redis.Redis.from_url(settings.REDIS_URL)
    assert not client_redis.exists(streams.stream_key(job.id))


def test_stored_webhook_payloads_lose_personal_data_after_the_retention_period(db):
    old, new = (json.loads(fake.event("invoice.paid", fake.invoice())) for _ in range(2))
    for event in (old, new):
        WebhookEvent.objects.create(
            stripe_event_id=event["id"], type="invoice.paid", stripe_created_at=timezone.now(), payload=event,
            status="processed",
        )  # fmt: skip
    WebhookEvent.objects.filter(stripe_event_id=old["id"]).update(
        received_at=timezone.now() - timedelta(days=settings.BILLING_EVENT_RETENTION_DAYS + 1)
    )

    assert webhook_payloads_scrub_expired() == 1

    assert WebhookEvent.objects.get(stripe_event_id=old["id"]).payload["data"]["object"]["customer_email"] is None
    assert WebhookEvent.objects.get(stripe_event_id=new["id"]).payload["data"]["object"]["customer_email"] == EMAIL
