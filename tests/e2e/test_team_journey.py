"""A team in real Chromium: the owner buys three Team seats in the sandbox, invites a member by
email, the member signs up from the printed mail, joins and generates; the owner sees the member's
usage and caps them; the member hits the cap and is told which limit it is."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from accounts.models import Membership
from billing.models import QuotaPeriod, Subscription
from inference.models import GenerationJob
from tests.e2e.helpers import generate, sign_in, verification_link
from tests.factories import PASSWORD, PlanFactory, UserFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PER_SEAT = 40_000


@pytest.fixture
def plans(db, tiny_model_path):
    free = PlanFactory(slug="free", name="Free", is_default=True, price_cents=0, monthly_token_allowance=5_000)
    team = PlanFactory(
        slug="team", name="Team", price_cents=9900, per_seat=True, monthly_token_allowance=PER_SEAT,
        stripe_price_id="price_sandbox_team", max_new_tokens=1000, max_prompt_tokens=500,
    )  # fmt: skip
    return free, team


def _invitation_link(mails: list[str], email: str) -> str:
    for message in reversed(mails):
        if f"To: {email}" in message:
            match = re.search(r"https?://\S+/invitations/\S+/", message)
            if match:
                return match.group(0)
    raise AssertionError(f"no invitation mail to {email} among {len(mails)} messages")


def test_an_owner_buys_seats_invites_a_member_who_generates_and_is_capped(
    page, browser, web_server, celery_worker, plans, artifacts_dir
):
    owner = UserFactory(email="owner@example.com")
    member_email = "member@example.com"

    # The owner subscribes their workspace to Team with 3 seats.
    sign_in(page, web_server.url, owner.email)
    page.goto(web_server.url + "/pricing/")
    page.locator('[data-plan="team"]').get_by_test_id("seats-input").fill("3")
    page.get_by_role("button", name="Subscribe to Team").click()
    expect(page.get_by_test_id("checkout-seats")).to_have_text("3 seats")
    page.get_by_role("button", name="Pay").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("You are on Team", timeout=30_000)
    page.goto(web_server.url + "/billing/")
    expect(page.get_by_test_id("seat-count")).to_have_text("3")
    expect(page.get_by_test_id("allowance")).to_have_text(f"{3 * PER_SEAT:,}")
    subscription = Subscription.objects.get(workspace__personal_of=owner)
    assert (subscription.seats, subscription.paid_seats) == (3, 3)

    # The owner invites a member by email.
    page.goto(web_server.url + "/workspace/members/")
    expect(page.get_by_test_id("seats")).to_have_text("1 of 3 seats in use")
    page.get_by_label("Email").fill(member_email)
    page.get_by_role("button", name="Send invitation").click()
    expect(page.locator(".message-success")).to_contain_text(f"Invitation sent to {member_email}")
    expect(page.get_by_test_id("invitations-table")).to_contain_text(member_email)
    page.screenshot(path=str(artifacts_dir / "team-members.png"), full_page=True)

    # The member opens the link from the printed mail, signs up, verifies, signs in and accepts.
    member_context = browser.new_context(viewport={"width": 1280, "height": 800})
    member = member_context.new_page()
    member.set_default_timeout(15_000)
    member.goto(_invitation_link(web_server.mails(), member_email))
    expect(member.get_by_test_id("invitation")).to_contain_text("invited member@example.com")
    member.get_by_role("link", name="Sign up").click()
    member.get_by_label("Email").fill(member_email)
    member.locator("#id_password1").fill(PASSWORD)
    member.locator("#id_password2").fill(PASSWORD)
    member.get_by_role("button", name="Sign Up").click()
    member.goto(verification_link(web_server.mails(), member_email))
    member.get_by_role("button", name="Confirm").click()
    sign_in(member, web_server.url, member_email)
    member.get_by_test_id("accept-invitation").click()
    expect(member.locator(".message-success")).to_contain_text("Welcome to")
    expect(member.get_by_test_id("workspace-switcher")).to_contain_text(owner.email)
    assert Membership.objects.get(workspace=subscription.workspace, user__email=member_email).role == "member"

    # The member generates in the team's workspace, from its pool.
    member.goto(web_server.url + "/generate/")
    generate(member, "The team meets on Monday", 30)
    expect(member.get_by_test_id("job-status")).to_have_text("succeeded", timeout=60_000)
    job = GenerationJob.objects.get(user__email=member_email)
    assert job.workspace_id == subscription.workspace_id
    assert QuotaPeriod.objects.get(workspace=subscription.workspace).used == job.tokens_charged
    # A member sees neither billing nor the members page.
    member.goto(web_server.url + "/billing/")
    expect(member.get_by_test_id("forbidden-message")).to_contain_text("Only the workspace's owner")

    # The owner sees the member's usage and caps them at what they have used.
    page.goto(web_server.url + "/usage/")
    row = page.get_by_test_id("usage-by-member").locator(f'tr[data-member="{member_email}"]')
    expect(row).to_contain_text(f"{job.tokens_charged:,}")
    page.goto(web_server.url + "/workspace/members/")
    page.get_by_label(f"Monthly token cap of {member_email}").fill(str(job.tokens_charged))
    page.locator(f'tr[data-member="{member_email}"]').get_by_role("button", name="Set cap").click()
    expect(page.locator(".message-success")).to_contain_text(f"may spend up to {job.tokens_charged:,} tokens")
    page.screenshot(path=str(artifacts_dir / "team-members-capped.png"), full_page=True)
    phone = browser.new_context(viewport={"width": 375, "height": 812}, is_mobile=True)
    phone_page = phone.new_page()
    phone_page.context.add_cookies(page.context.cookies())
    for path in ("/workspace/members/", "/usage/", "/billing/"):
        phone_page.goto(web_server.url + path)
        assert phone_page.evaluate("document.documentElement.scrollWidth") <= 375, path
    phone_page.screenshot(path=str(artifacts_dir / "team-members-phone.png"), full_page=True)
    phone.close()

    # The member hits the cap: the message says which limit, and nothing was queued.
    member.goto(web_server.url + "/generate/")
    expect(member.get_by_test_id("cap-meter")).to_contain_text(f"{job.tokens_charged} / {job.tokens_charged}")
    generate(member, "One more line, please", 30)
    expect(member.get_by_text("Your monthly cap in this workspace is reached")).to_be_visible()
    member.screenshot(path=str(artifacts_dir / "team-member-capped.png"), full_page=True)
    assert GenerationJob.objects.filter(user__email=member_email).count() == 1
    member_context.close()
