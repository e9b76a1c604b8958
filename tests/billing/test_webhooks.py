"""The webhook endpoint with signed payloads shaped like the pinned API version."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import close_old_connections
from django.utils import timezone

from accounts.teams import workspace_create
from accounts.workspaces import workspace_personal
from billing.models import BillingCustomer, QuotaPeriod, Subscription, WebhookEvent
from billing.selectors import entitlements_for
from billing.services.webhooks import webhook_receive
from billing.stripe_client import sign
from tests.billing import stripe_fakes as fake
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_a_subscription_event_grants_the_plan_and_its_paid_invoice_the_allowance(client, customer):
    response = fake.deliver(client, fake.event("customer.subscription.created", fake.subscription()))

    assert response.status_code == 200
    entitlements = entitlements_for(
        workspace_personal(customer), now=datetime.fromtimestamp(fake.PERIOD_START + 60, tz=UTC)
    )
    assert entitlements.plan.slug == "pro"
    subscription = Subscription.objects.get()
    assert (subscription.status, subscription.stripe_price_id) == ("active", "price_TestPro0001")
    assert subscription.current_period_start.timestamp() == fake.PERIOD_START
    assert not QuotaPeriod.objects.filter(workspace__personal_of=customer).exists()  # no tokens before payment

    assert fake.deliver(client, fake.event("invoice.paid", fake.invoice())).status_code == 200

    period = QuotaPeriod.objects.get(workspace__personal_of=customer)
    assert (period.allowance, period.used) == (100_000, 0)


@pytest.mark.parametrize(
    "signature",
    ["", "t=123,v1=deadbeef", sign("{}"), "garbage"],
    ids=["missing", "wrong", "other-payload", "malformed"],
)
def test_a_bad_or_missing_signature_is_refused_and_writes_nothing(client, customer, signature):
    response = fake.deliver(
        client, fake.event("customer.subscription.created", fake.subscription()), signature=signature
    )

    assert response.status_code == 400
    assert not WebhookEvent.objects.exists()
    assert not Subscription.objects.exists()


def test_a_stale_signature_is_refused(client, customer):
    payload = fake.event("customer.subscription.created", fake.subscription())

    response = fake.deliver(client, payload, signature=fake.stale_signature(payload))

    assert response.status_code == 400
    assert not WebhookEvent.objects.exists()
    assert not Subscription.objects.exists()


def test_a_duplicate_event_is_applied_once(client, customer):
    payload = fake.event("invoice.paid", fake.invoice())
    fake.deliver(client, fake.event("customer.subscription.created", fake.subscription()))
    first = fake.deliver(client, payload)
    QuotaPeriod.objects.filter(workspace__personal_of=customer).update(used=500)

    second = fake.deliver(client, payload)

    assert first.status_code == second.status_code == 200
    assert WebhookEvent.objects.filter(type="invoice.paid").count() == 1
    assert QuotaPeriod.objects.get(workspace__personal_of=customer).used == 500


@pytest.mark.django_db(transaction=True)
def test_two_copies_of_one_event_arriving_at_once_are_applied_once(customer):
    created = fake.event("customer.subscription.created", fake.subscription())
    paid = fake.event("invoice.paid", fake.invoice())
    errors = []

    def receive_twice_at_once(payload: str) -> None:
        start = threading.Barrier(2)

        def receive():
            start.wait()
            try:
                webhook_receive(payload=payload.encode(), signature=sign(payload))
            except Exception as exc:  # surfaces in the assertion below
                errors.append(exc)
            finally:
                close_old_connections()

        threads = [threading.Thread(target=receive) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    receive_twice_at_once(created)
    receive_twice_at_once(paid)

    assert errors == []
    assert WebhookEvent.objects.count() == 2
    assert Subscription.objects.count() == 1
    assert [p.allowance for p in QuotaPeriod.objects.filter(workspace__personal_of=customer)] == [100_000]


def test_a_deleted_event_that_arrives_before_an_older_update_wins(client, customer):
    now = int(time.time())
    deleted = fake.subscription(status="canceled", ended_at=now, canceled_at=now)
    older_update = fake.subscription(status="active", cancel_at_period_end=True)

    fake.deliver(client, fake.event("customer.subscription.deleted", deleted, created=now))
    fake.deliver(client, fake.event("customer.subscription.updated", older_update, created=now - 30))

    subscription = Subscription.objects.get()
    assert subscription.status == "canceled"
    assert entitlements_for(workspace_personal(customer)).plan.slug == "free"


def test_an_update_as_new_as_the_stored_state_still_cannot_revive_a_canceled_subscription(client, customer):
    now = int(time.time())
    fake.deliver(client, fake.event("customer.subscription.deleted", fake.subscription(status="canceled"), created=now))
    fake.deliver(client, fake.event("customer.subscription.updated", fake.subscription(status="active"), created=now))

    assert Subscription.objects.get().status == "canceled"


def test_a_failing_handler_rolls_back_answers_5xx_and_the_redelivery_succeeds(client, customer, team_plan):
    unknown_price = fake.subscription(price="price_NotYetSold01", metadata={})
    payload = fake.event("customer.subscription.created", unknown_price)

    failed = fake.deliver(client, payload)

    assert failed.status_code == 500
    assert not Subscription.objects.exists()
    assert not QuotaPeriod.objects.exists()
    record = WebhookEvent.objects.get()
    assert record.status == "failed"
    assert "no plan sells" in record.error

    team_plan.stripe_price_id = "price_NotYetSold01"
    team_plan.save()
    retried = fake.deliver(client, payload)

    assert retried.status_code == 200
    record.refresh_from_db()
    assert (record.status, record.attempts) == ("processed", 2)
    assert Subscription.objects.get().plan == team_plan


def test_an_invoice_before_its_subscription_asks_stripe_to_retry(client, customer):
    response = fake.deliver(client, fake.event("invoice.paid", fake.invoice()))

    assert response.status_code == 503
    assert WebhookEvent.objects.get().status == "failed"
    assert not QuotaPeriod.objects.filter(workspace__personal_of=customer).exists()  # no tokens until it is applied


def test_invoice_paid_twice_for_a_new_period_resets_the_allowance_once(client, customer):
    fake.deliver(client, fake.event("customer.subscription.created", fake.subscription()))
    fake.deliver(client, fake.event("invoice.paid", fake.invoice()))
    QuotaPeriod.objects.filter(workspace__personal_of=customer).update(used=90_000)
    next_start, next_end = fake.PERIOD_END, fake.PERIOD_END + 30 * 86400
    renewal = fake.invoice(period_start=next_start, period_end=next_end)

    fake.deliver(client, fake.event("invoice.paid", renewal))
    QuotaPeriod.objects.filter(
        workspace__personal_of=customer, period_start=datetime.fromtimestamp(next_start, tz=UTC)
    ).update(used=10)
    fake.deliver(client, fake.event("invoice.paid", renewal))  # a second event for the same invoice

    periods = QuotaPeriod.objects.filter(workspace__personal_of=customer).order_by("period_start")
    assert [(p.allowance, p.used) for p in periods] == [(100_000, 90_000), (100_000, 10)]


def test_a_failed_payment_keeps_the_plan_through_the_grace_period_then_falls_back_to_free(client, customer):
    now = timezone.now()
    period = {
        "current_period_start": int(now.timestamp()) - 86400,
        "current_period_end": int(now.timestamp()) + 20 * 86400,
    }
    fake.deliver(
        client,
        fake.event("customer.subscription.created", fake.subscription(**period), created=int(now.timestamp()) - 60),
    )

    fake.deliver(client, fake.event("invoice.payment_failed", fake.invoice(status="open")))
    fake.deliver(client, fake.event("customer.subscription.updated", fake.subscription(status="past_due", **period)))

    subscription = Subscription.objects.get()
    assert subscription.status == "past_due" and subscription.payment_failed_at is not None
    during = entitlements_for(workspace_personal(customer))
    assert during.plan.slug == "pro" and during.in_grace
    client.force_login(customer)
    assert "The last payment failed" in client.get("/billing/").content.decode()
    after_grace = entitlements_for(workspace_personal(customer), now=now + timedelta(days=4))
    assert after_grace.plan.slug == "free"


def test_an_event_of_another_type_is_acknowledged_and_ignored(client, customer):
    response = fake.deliver(client, fake.event("customer.created", {"id": "cus_X", "object": "customer"}))

    assert response.status_code == 200
    assert WebhookEvent.objects.get().status == "ignored"


def test_a_subscriber_on_an_archived_price_is_found_through_the_plans_product(client, customer, pro_plan):
    # The plan's price changed; the subscriber still pays the old one, of the same product.
    pro_plan.stripe_price_id, pro_plan.stripe_product_id = "price_New0001", "prod_TestPro0001"
    pro_plan.save()

    response = fake.deliver(client, fake.event("customer.subscription.updated", fake.subscription()))

    assert response.status_code == 200
    assert Subscription.objects.get(workspace__personal_of=customer).plan == pro_plan


def test_of_two_events_in_one_second_incomplete_never_undoes_active(client, customer, pro_plan):
    now = int(time.time())

    fake.deliver(client, fake.event("customer.subscription.updated", fake.subscription(status="active"), created=now))
    fake.deliver(
        client, fake.event("customer.subscription.created", fake.subscription(status="incomplete"), created=now)
    )

    assert Subscription.objects.get(workspace__personal_of=customer).status == "active"


def test_events_about_a_deleted_account_are_acknowledged_and_ignored(client, free_plan, pro_plan):
    gone = fake.deliver(client, fake.event("customer.subscription.deleted", fake.subscription(status="canceled")))
    invoice = fake.deliver(client, fake.event("invoice.paid", fake.invoice()))

    assert (gone.status_code, invoice.status_code) == (200, 200)
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {"ignored"}
    assert not Subscription.objects.exists()


def test_a_checkout_names_its_workspace_so_the_new_customer_and_its_subscription_land_there(
    client, free_plan, pro_plan
):
    owner = UserFactory(email="team-owner@example.com")
    team = workspace_create(owner=owner, name="Acme")
    metadata = {"workspace_id": str(team.pk), "plan": "pro"}
    session = {**fake.fixture("checkout_session"), "client_reference_id": str(team.pk), "metadata": metadata}

    fake.deliver(client, fake.event("checkout.session.completed", session))
    fake.deliver(client, fake.event("customer.subscription.created", fake.subscription(metadata=metadata)))
    fake.deliver(client, fake.event("invoice.paid", fake.invoice()))

    assert BillingCustomer.objects.get(stripe_customer_id="cus_TestCustomer0001").workspace == team
    assert Subscription.objects.get().workspace == team
    during = datetime.fromtimestamp(fake.PERIOD_START + 60, tz=UTC)
    assert entitlements_for(team, now=during).plan.slug == "pro"
    assert QuotaPeriod.objects.get().workspace == team
    # The owner's own workspace is not the one that paid.
    assert entitlements_for(workspace_personal(owner), now=during).plan.slug == "free"


def test_a_subscription_made_before_workspaces_lands_in_its_users_personal_workspace(client, free_plan, pro_plan):
    user = UserFactory(email="early@example.com")
    personal = workspace_personal(user)  # as the workspaces migration gave every user
    workspace_personal(UserFactory(email="bystander@example.com"))
    legacy = fake.subscription(customer="cus_Legacy000001", metadata={"user_id": str(user.pk), "plan": "pro"})

    assert fake.deliver(client, fake.event("customer.subscription.created", legacy)).status_code == 200

    assert Subscription.objects.get().workspace == personal
    during = datetime.fromtimestamp(fake.PERIOD_START + 60, tz=UTC)
    assert entitlements_for(personal, now=during).plan.slug == "pro"
