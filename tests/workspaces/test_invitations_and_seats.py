"""Invitations (sent by mail, accepted once by the invited address, refused when wrong, used,
expired, withdrawn or forged), seats (no invitation past them, never fewer than the people holding
them, more of them bought through Checkout and the Portal) and removing a member."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta

import pytest
from django.core import mail, signing
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import teams
from accounts.models import ApiKey, Invitation, Membership, WorkspaceRole
from accounts.workspaces import PENDING_INVITATION, SESSION_KEY, workspace_personal
from billing import sandbox
from billing.models import MemberQuota, QuotaPeriod, Subscription, UsageRecord
from billing.selectors import entitlements_for, seats_for
from billing.services.subscriptions import MAX_SEATS, seats_parse
from core.errors import ApplicationError, Conflict
from inference.models import GenerationJob, JobStatus
from tests.billing import stripe_fakes as fake
from tests.factories import ApiKeyFactory, UserFactory
from tests.workspaces.conftest import SEATS
from tests.workspaces.helpers import finished_job, membership, queued_job, state, work_in

pytestmark = pytest.mark.django_db

LINK = re.compile(r"http://testserver(/invitations/[^/\s]+/)")


def _invite(browser, email: str, role: str = WorkspaceRole.MEMBER):
    return browser.post("/workspace/members/invite/", {"email": email, "role": role}, follow=True)


def _link_in_mail(email: str) -> str:
    """The link in the newest invitation mailed to ``email``."""
    sent = [message for message in mail.outbox if message.to == [email]]
    assert sent, [m.to for m in mail.outbox]
    found = LINK.search(sent[-1].body)
    assert found, sent[-1].body
    return found.group(1)


@pytest.fixture
def crew(team, owner, admin, member, colleague):
    """Acme with four of its five seats taken."""
    return team


@pytest.fixture
def invited(crew, admin):
    """An invitation to newcomer@example.com sent from the members page; its link."""
    mail.outbox.clear()
    _invite(work_in(admin, crew), "newcomer@example.com")
    return _link_in_mail("newcomer@example.com")


# --- invitations -----------------------------------------------------------------------------------------


def test_an_invitation_is_mailed_with_a_link_that_the_invited_address_accepts_once(crew, admin, invited):
    invitation = Invitation.objects.get(workspace=crew, email="newcomer@example.com")
    message = mail.outbox[-1]
    assert "admin@example.com invited you to Acme" in message.subject
    assert "as member" in message.body and "works once" in message.body
    newcomer = UserFactory(email="newcomer@example.com")
    browser = Client()
    browser.force_login(newcomer)

    page = browser.get(invited)
    assert page.status_code == 200 and "Join Acme" in page.content.decode()
    accepted = browser.post(invited)

    assert accepted.status_code == 302 and accepted["Location"] == "/generate/"
    joined = membership(newcomer, crew)
    assert joined.role == WorkspaceRole.MEMBER and joined.monthly_token_cap is None
    invitation.refresh_from_db()
    assert invitation.accepted_at is not None and invitation.accepted_by == newcomer
    assert browser.session[SESSION_KEY] == crew.pk
    # The link is spent: opening it again says so, and changes nothing.
    again = browser.post(invited)
    assert again.status_code == 410 and "already used" in again.content.decode()
    assert Membership.objects.filter(workspace=crew).count() == 5


def test_a_signed_out_visitor_is_asked_to_sign_in_and_the_invitation_waits(invited):
    browser = Client()

    page = browser.get(invited)

    assert page.status_code == 200
    assert "Sign up or sign in with newcomer@example.com" in page.content.decode()
    assert browser.session[PENDING_INVITATION] == invited.split("/")[2]


@pytest.mark.parametrize("verified", [True, False], ids=["another-address", "same-address-unverified"])
def test_someone_else_with_the_link_is_refused_and_nothing_changes(crew, rival, invited, outsider, verified):
    stranger = outsider if verified else UserFactory(email="Newcomer@example.com", verified=False)
    browser = Client()
    browser.force_login(stranger)
    before = state(crew, rival)

    refused = browser.post(invited)

    assert refused.status_code == 403
    assert "This invitation is for newcomer@example.com" in refused.content.decode()
    assert state(crew, rival) == before
    assert SESSION_KEY not in browser.session


def test_a_used_invitation_cannot_be_accepted_by_anyone_else(crew, rival, invited, outsider):
    browser = Client()
    browser.force_login(UserFactory(email="newcomer@example.com"))
    browser.post(invited)
    other = Client()
    other.force_login(outsider)
    before = state(crew, rival)

    refused = other.post(invited)

    assert refused.status_code == 410 and "already used" in refused.content.decode()
    assert state(crew, rival) == before


def test_an_expired_invitation_is_refused_and_holds_no_seat(crew, rival, invited):
    Invitation.objects.filter(workspace=crew).update(expires_at=timezone.now() - timedelta(seconds=1))
    browser = Client()
    browser.force_login(UserFactory(email="newcomer@example.com"))
    before = state(crew, rival)

    page, post = browser.get(invited), browser.post(invited)

    for response in (page, post):
        assert response.status_code == 410 and "expired" in response.content.decode()
    assert state(crew, rival) == before
    assert teams.seats_taken(crew) == (4, 0)


def test_a_withdrawn_invitation_is_refused_and_frees_its_seat(crew, rival, owner, invited):
    invitation = Invitation.objects.get(workspace=crew, email="newcomer@example.com")
    assert teams.seats_taken(crew) == (4, 1)
    work_in(owner, crew).post(f"/workspace/invitations/{invitation.pk}/revoke/")
    browser = Client()
    browser.force_login(UserFactory(email="newcomer@example.com"))
    before = state(crew, rival)

    page, post = browser.get(invited), browser.post(invited)

    for response in (page, post):
        assert response.status_code == 410 and "withdrawn" in response.content.decode()
    assert state(crew, rival) == before
    assert teams.seats_taken(crew) == (4, 0)


def test_a_forged_or_tampered_link_is_a_404(crew, rival, invited):
    token = invited.split("/")[2]
    invitation = Invitation.objects.get(workspace=crew, email="newcomer@example.com")
    forged = [
        token[:-1] + ("A" if token[-1] != "A" else "B"),  # the signature no longer matches
        # Another invitation's id under this link's signature.
        token.replace(token.split(":")[0], signing.dumps(invitation.pk + 1, salt="x").split(":")[0]),
        signing.dumps(invitation.pk, salt="inkwell.some-other-salt"),
        "not-a-token",
    ]
    browser = Client()
    browser.force_login(UserFactory(email="newcomer@example.com"))
    before = state(crew, rival)

    for link in forged:
        for response in (browser.get(f"/invitations/{link}/"), browser.post(f"/invitations/{link}/")):
            assert response.status_code == 404, link
            assert "not valid" in response.content.decode()
    assert state(crew, rival) == before


def test_the_link_of_a_deleted_invitation_is_a_404(crew, invited):
    Invitation.objects.filter(workspace=crew).delete()
    browser = Client()
    browser.force_login(UserFactory(email="newcomer@example.com"))

    response = browser.post(invited)

    assert response.status_code == 404 and "no longer exists" in response.content.decode()
    assert not Membership.objects.filter(workspace=crew, user__email="newcomer@example.com").exists()


# --- seats ----------------------------------------------------------------------------------------------


def test_inviting_past_the_seats_is_refused_with_a_message_and_sends_nothing(crew, rival, admin, invited):
    before = state(crew, rival)
    mail.outbox.clear()

    page = _invite(work_in(admin, crew), "one-too-many@example.com").content.decode()

    assert "All 5 seats of Acme are taken (4 members, 1 pending invitation)" in page
    assert "add seats on the billing page, or revoke a pending invitation" in page
    assert state(crew, rival) == before
    assert mail.outbox == []
    with pytest.raises(Conflict) as refused:
        teams.invitation_create(workspace=crew, email="one-too-many@example.com", role="member", seats=SEATS)
    assert refused.value.code == "no_seat_left"
    with pytest.raises(Conflict) as refused:
        teams.member_add(workspace=crew, user=UserFactory(), role="member", seats=SEATS)
    assert refused.value.code == "no_seat_left"


def test_inviting_the_same_address_again_replaces_the_invitation_without_taking_a_second_seat(crew, admin, invited):
    _invite(work_in(admin, crew), "newcomer@example.com")

    assert teams.seats_taken(crew) == (4, 1)
    second = _link_in_mail("newcomer@example.com")
    assert second != invited
    browser = Client()
    browser.force_login(UserFactory(email="newcomer@example.com"))
    assert browser.post(invited).status_code == 410
    assert browser.post(second).status_code == 302


@pytest.mark.parametrize(
    ("typed", "people", "says"),
    [
        ("3", 4, "4 people hold seats"),
        ("0", 1, "between 1 and 1,000"),
        ("", 1, "whole number"),
        ("three", 1, "whole number"),
        ("-2", 1, "whole number"),
        ("2.5", 1, "whole number"),
        ("1e3", 1, "whole number"),
        (str(MAX_SEATS + 1), 1, "between 1 and 1,000"),
        ("9" * 40, 1, "between 1 and 1,000"),
        pytest.param("\u00b2", 1, "whole number", id="superscript-two"),
    ],
)
def test_seats_below_the_people_holding_them_or_not_a_sane_number_are_refused(team_plan, typed, people, says):
    with pytest.raises(ApplicationError) as refused:
        seats_parse(typed, plan=team_plan, people=people)

    assert refused.value.param == "seats"
    assert says in refused.value.message


def test_seats_from_the_people_holding_them_up_to_the_maximum_are_accepted(team_plan, default_plan):
    assert seats_parse("4", plan=team_plan, people=4) == 4
    assert seats_parse(" 12 ", plan=team_plan, people=4) == 12
    assert seats_parse(str(MAX_SEATS), plan=team_plan, people=4) == MAX_SEATS
    # A plan not sold per seat has one seat, whatever is typed.
    assert seats_parse("40", plan=default_plan, people=4) == 1


def _apply(client, events: list[dict]) -> None:
    for event in events:
        payload = fake.event(event["type"], event["object"], created=event["created"], event_id=event["id"])
        assert fake.deliver(client, payload).status_code == 200, payload


@pytest.fixture
def initech(owner, team_plan):
    """A team workspace subscribed to the Team plan with three seats through the sandbox's
    Checkout events, and two members besides its owner: every seat taken."""
    workspace = teams.workspace_create(owner=owner, name="Initech")
    data = {"workspace": workspace.pk, "customer": "cus_TestInitech01", "seats": 3}
    _apply(Client(), sandbox.checkout_paid_events(data=data, plan=team_plan))
    for email in ("first@example.com", "second@example.com"):
        teams.member_add(workspace=workspace, user=UserFactory(email=email), role="member", seats=3)
    return workspace


def test_the_sandbox_checkout_events_for_three_seats_grant_three_seats_and_their_pool(initech):
    subscription = Subscription.objects.get(workspace=initech)

    assert (subscription.status, subscription.seats, subscription.paid_seats) == ("active", 3, 3)
    assert QuotaPeriod.objects.get(workspace=initech).allowance == 3 * 10_000
    assert entitlements_for(initech).monthly_token_allowance == 3 * 10_000
    assert seats_for(initech) == 3


def test_subscribing_through_the_sandbox_checkout_with_three_seats(owner, team_plan, deliveries):
    workspace = teams.workspace_create(owner=owner, name="Initech")
    browser = work_in(owner, workspace)

    started = browser.post("/billing/subscribe/team/", {"seats": "3"})

    assert started.status_code == 302
    checkout = browser.get(started["Location"])
    assert checkout.status_code == 200
    assert 'data-testid="checkout-seats">3 seats<' in checkout.content.decode()
    paid = browser.post(started["Location"], {"action": "pay"})
    assert paid.status_code == 302
    [(url, events)] = deliveries
    assert url == "http://testserver/billing/webhook/"
    _apply(browser, events)
    subscription = Subscription.objects.get(workspace=workspace)
    assert (subscription.status, subscription.seats, subscription.paid_seats) == ("active", 3, 3)
    assert QuotaPeriod.objects.get(workspace=workspace).allowance == 3 * 10_000
    assert seats_for(workspace) == 3


def test_a_portal_seat_change_raises_the_seats_at_once_and_the_pool_once_paid(initech, owner):
    subscription = Subscription.objects.get(workspace=initech)
    updated, paid = sandbox.portal_events(action="seats:5", subscription=subscription, plans={})
    assert paid["object"]["billing_reason"] == "subscription_update"

    _apply(Client(), [updated])

    subscription.refresh_from_db()
    assert (subscription.seats, subscription.paid_seats) == (5, 3)
    assert seats_for(initech) == 5  # invitations may fill the new seats while the invoice is paid
    assert QuotaPeriod.objects.get(workspace=initech).allowance == 3 * 10_000
    assert entitlements_for(initech).monthly_token_allowance == 3 * 10_000

    _apply(Client(), [paid])

    subscription.refresh_from_db()
    assert (subscription.seats, subscription.paid_seats) == (5, 5)
    assert QuotaPeriod.objects.get(workspace=initech).allowance == 5 * 10_000
    assert entitlements_for(initech).monthly_token_allowance == 5 * 10_000
    # A replay of the same invoice grants nothing more.
    _apply(Client(), [paid])
    assert QuotaPeriod.objects.get(workspace=initech).allowance == 5 * 10_000


def test_adding_seats_on_the_billing_page_asks_the_gateway_and_the_webhook_brings_them(initech, owner, deliveries):
    browser = work_in(owner, initech)

    page = browser.post("/billing/seats/", {"seats": "5"}, follow=True).content.decode()

    assert "Seats change to 5 asked" in page
    [(_url, events)] = deliveries
    assert Subscription.objects.get(workspace=initech).seats == 3  # nothing changes before the webhook
    _apply(browser, events)
    subscription = Subscription.objects.get(workspace=initech)
    assert (subscription.seats, subscription.paid_seats) == (5, 5)
    assert QuotaPeriod.objects.get(workspace=initech).allowance == 5 * 10_000
    assert _invite(browser, "third@example.com").status_code == 200
    assert Invitation.objects.filter(workspace=initech, email="third@example.com").exists()


@pytest.mark.parametrize("seats", ["2", "1", "0", "many", pytest.param("\u00b2", id="superscript-two")])
def test_fewer_seats_than_people_is_refused_on_the_billing_page_without_asking_the_gateway(
    initech, owner, deliveries, monkeypatch, seats
):
    def no_gateway():
        raise AssertionError("the gateway was asked")

    monkeypatch.setattr("billing.services.subscriptions.billing_gateway", no_gateway)
    browser = work_in(owner, initech)
    before = state(initech)

    page = browser.post("/billing/seats/", {"seats": seats}, follow=True)

    text = page.content.decode()
    assert page.redirect_chain[-1][0] == "/billing/"
    if seats in ("2", "1"):
        assert "3 people hold seats in this workspace" in text and "choose at least 3 seats" in text
    else:
        assert "Seats must be a whole number" in text or "Choose between 1 and 1,000 seats" in text
    assert deliveries == []
    assert state(initech) == before


def test_a_pending_invitation_holds_a_seat_against_a_decrease(initech, owner, deliveries):
    browser = work_in(owner, initech)
    browser.post("/billing/seats/", {"seats": "4"})
    _apply(browser, deliveries.pop()[1])
    _invite(browser, "fourth@example.com")
    assert teams.seats_taken(initech) == (3, 1)

    page = browser.post("/billing/seats/", {"seats": "3"}, follow=True).content.decode()

    assert "4 people hold seats" in page
    assert deliveries == []
    assert Subscription.objects.get(workspace=initech).seats == 4


# --- removing a member -------------------------------------------------------------------------------------


def test_removing_a_member_revokes_their_keys_there_stops_their_jobs_and_keeps_their_history(
    crew, rival, admin, member
):
    rival_before = state(rival)
    keys_here = [ApiKeyFactory(user=member, workspace=crew, name=f"acme-{n}") for n in range(2)]
    key_elsewhere = ApiKeyFactory(user=member, name="personal")
    done = finished_job(member, crew, prompt="Acme history", text="kept")
    pool_before = QuotaPeriod.objects.filter(workspace=crew).values("used", "reserved").get()
    waiting = queued_job(member, crew, prompt="Acme waiting")
    elsewhere = queued_job(member, workspace_personal(member), prompt="Personal waiting")
    assert QuotaPeriod.objects.get(workspace=crew).reserved == pool_before["reserved"] + waiting.tokens_reserved
    member_browser = work_in(member, crew)

    page = work_in(admin, crew).post(f"/workspace/members/{membership(member, crew).pk}/remove/", follow=True)

    assert "member@example.com was removed; their API keys here were revoked and 1 running job stopped" in (
        page.content.decode()
    )
    assert not Membership.objects.filter(workspace=crew, user=member).exists()
    assert all(ApiKey.objects.get(pk=key.pk).revoked_at is not None for key in keys_here)
    assert ApiKey.objects.get(pk=key_elsewhere.pk).revoked_at is None
    # The queued job is cancelled and its reservation given back, in the pool and the sub-ledger.
    waiting.refresh_from_db()
    assert (waiting.status, waiting.tokens_charged) == (JobStatus.CANCELLED, 0)
    assert QuotaPeriod.objects.filter(workspace=crew).values("used", "reserved").get() == pool_before
    assert MemberQuota.objects.get(quota_period__workspace=crew, user=member).reserved == 0
    assert GenerationJob.objects.get(pk=elsewhere.pk).status == JobStatus.QUEUED
    # Their history stays with the workspace.
    done.refresh_from_db()
    assert (done.workspace_id, done.user_id, done.output_text) == (crew.pk, member.pk, "kept")
    assert UsageRecord.objects.filter(workspace=crew, user=member, job=done).exists()
    rows = list(csv.DictReader(io.StringIO(work_in(admin, crew).get("/usage/export.csv").content.decode())))
    assert str(done.pk) in {row["job_id"] for row in rows if row["member"] == "member@example.com"}
    # Their Acme key is refused, and their browser is back in their personal workspace.
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {keys_here[0].raw}")
    refused = api.get("/api/v1/jobs")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "revoked_api_key"
    assert member_browser.get(f"/jobs/{done.pk}/").status_code == 404
    assert SESSION_KEY not in member_browser.session
    assert state(rival) == rival_before


def test_a_removed_member_appears_in_the_usage_api_without_a_role(crew, admin, member):
    finished_job(member, crew, prompt="Acme history", text="kept")
    admin_key = ApiKeyFactory(user=admin, workspace=crew)
    work_in(admin, crew).post(f"/workspace/members/{membership(member, crew).pk}/remove/")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {admin_key.raw}")

    lines = {line["email"]: line for line in api.get("/api/v1/usage").json()["members"]}

    assert lines["member@example.com"]["role"] == ""
    assert lines["member@example.com"]["tokens"] > 0


def test_removing_a_member_frees_their_seat_for_an_invitation(crew, rival, admin, member, invited):
    browser = work_in(admin, crew)
    assert "All 5 seats" in _invite(browser, "later@example.com").content.decode()

    browser.post(f"/workspace/members/{membership(member, crew).pk}/remove/")
    page = _invite(browser, "later@example.com").content.decode()

    assert "Invitation sent to later@example.com" in page
    assert teams.seats_taken(crew) == (3, 2)
