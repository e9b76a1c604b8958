from __future__ import annotations

import pytest
from playwright.sync_api import expect

from accounts.models import User
from tests.e2e.helpers import verification_link
from tests.factories import PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_sign_up_verify_log_in_and_log_out(page, web_server, artifacts_dir):
    email = "journey@example.com"
    page.goto(web_server.url + "/")
    expect(page.get_by_role("heading", level=1)).to_contain_text("streams as it thinks")

    page.get_by_role("link", name="Start free").first.click()
    page.get_by_label("Email").fill(email)
    page.locator("#id_password1").fill(PASSWORD)
    page.locator("#id_password2").fill(PASSWORD)
    page.get_by_role("button", name="Sign Up").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Verify Your Email Address")
    assert not User.objects.get(email=email).emailaddress_set.get().verified

    page.goto(verification_link(web_server.mails(), email))
    page.get_by_role("button", name="Confirm").click()
    assert User.objects.get(email=email).emailaddress_set.get().verified

    page.goto(web_server.url + "/accounts/login/")
    page.locator("#id_login").fill(email)
    page.locator("#id_password").fill(PASSWORD)
    page.get_by_role("button", name="Sign In").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"Good to see you, {email}")
    page.screenshot(path=str(artifacts_dir / "landing-logged-in.png"), full_page=True)

    page.get_by_label("Account menu").click()
    page.get_by_role("menuitem", name="Sign out").click()
    expect(page.get_by_role("navigation").get_by_role("link", name="Sign in")).to_be_visible()
    expect(page.get_by_role("heading", level=1)).to_contain_text("streams as it thinks")


def test_landing_page_fits_a_phone(browser, web_server, artifacts_dir):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(web_server.url + "/")

    # Nothing is wider than the screen, and the menu opens from the toggle.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    expect(page.get_by_role("navigation").get_by_role("link", name="Sign in")).to_be_hidden()
    page.locator("label.nav-toggle-label").click()
    expect(page.get_by_role("navigation").get_by_role("link", name="Sign in")).to_be_visible()
    page.screenshot(path=str(artifacts_dir / "landing-phone.png"), full_page=True)
    context.close()
