"""In Chromium: a sensitive action asks for the password, then happens as the user asked it, with
nothing retyped; the owner then finds it on the workspace's activity page."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from accounts.models import ApiKey, User
from tests.e2e.helpers import sign_in
from tests.factories import PASSWORD, PlanFactory, UserFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_key_asks_for_the_password_then_appears_and_shows_in_the_activity(page, web_server, artifacts_dir):
    PlanFactory(slug="free", name="Free", is_default=True, price_cents=0, api_access=True)
    user = UserFactory(email="keys@example.com")
    sign_in(page, web_server.url, user.email)

    page.goto(web_server.url + "/account/api/")
    page.get_by_label("Name").fill("production app")
    page.get_by_label("Scope").select_option("read")
    page.get_by_role("button", name="Create key").click()

    expect(page.get_by_role("heading", level=1)).to_contain_text("Confirm Access")
    assert not ApiKey.objects.filter(user=user).exists()
    page.get_by_placeholder("Password").fill(PASSWORD)
    page.get_by_role("button", name="Confirm").click()

    expect(page.get_by_test_id("new-key")).to_be_visible()
    key = ApiKey.objects.get(user=user)
    assert (key.name, key.scope) == ("production app", "read")  # as typed before the password
    assert page.get_by_test_id("new-key-value").inner_text().startswith("ink_")
    page.screenshot(path=str(artifacts_dir / "reauth-key-created.png"), full_page=True)

    page.goto(web_server.url + "/workspace/members/")
    page.get_by_role("link", name="Activity").click()
    expect(page.get_by_test_id("activity")).to_contain_text("API key created")


def test_deleting_the_account_asks_for_the_password_once_then_deletes_it(page, web_server):
    PlanFactory(slug="free", name="Free", is_default=True, price_cents=0)
    user = UserFactory(email="leaving@example.com")
    sign_in(page, web_server.url, user.email)

    page.goto(web_server.url + "/account/delete/")
    page.get_by_label("Type your email address to confirm").fill(user.email)
    page.get_by_role("button", name="Delete my account").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Confirm Access")
    assert User.objects.filter(pk=user.pk).exists()
    page.get_by_placeholder("Password").fill(PASSWORD)
    page.get_by_role("button", name="Confirm").click()

    expect(page.get_by_text("Your account and its data were deleted")).to_be_visible()
    assert not User.objects.filter(pk=user.pk).exists()
