"""Staff accounts are as safe as customers': the admin signs in through allauth (rate limits,
two-factor step), and with STAFF_REQUIRE_MFA staff must enrol before staff pages open."""

from __future__ import annotations

import pytest
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret

from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


def test_the_admins_own_login_form_takes_no_password_and_sends_to_allauth(client, staff_user):
    page = client.get("/admin/login/?next=/admin/")
    attempt = client.post("/admin/login/?next=/admin/", {"username": staff_user.email, "password": PASSWORD})

    assert page.status_code == 302 and page.url.startswith("/accounts/login/")
    assert attempt.status_code == 302 and attempt.url.startswith("/accounts/login/")
    admin = client.get("/admin/")
    assert admin.status_code == 302 and admin.url == "/admin/login/?next=/admin/"  # still signed out
    assert "_auth_user_id" not in client.session


def test_fifteen_bad_admin_logins_from_one_address_are_refused_with_429(client, staff_user):
    statuses = [
        client.post("/accounts/login/?next=/admin/", {"login": staff_user.email, "password": "wrong"}).status_code
        for _ in range(15)
    ]

    assert statuses[0] == 200
    assert statuses[-1] == 429
    right = client.post("/accounts/login/?next=/admin/", {"login": staff_user.email, "password": PASSWORD})
    assert right.status_code == 429  # the right password is refused too while limited
    assert "Too many failed login attempts" in right.content.decode()
    assert "_auth_user_id" not in client.session


def test_staff_without_two_factor_must_enrol_before_the_admin_opens(client, staff_user, settings):
    settings.STAFF_REQUIRE_MFA = True
    client.force_login(staff_user)

    for url in ("/admin/", "/staff/business/"):
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith("/accounts/2fa/totp/activate/")

    TOTP.activate(staff_user, generate_totp_secret())

    admin, business = client.get("/admin/"), client.get("/staff/business/")
    assert admin.status_code == 200 and "Site administration" in admin.content.decode()
    assert business.status_code == 200 and 'data-testid="mrr"' in business.content.decode()


def test_staff_two_factor_is_required_by_default_in_production():
    import subprocess
    import sys

    code = "from django.conf import settings; print(settings.STAFF_REQUIRE_MFA)"
    env = {
        "INKWELL_ENV": "production",
        "SECRET_KEY": "x" * 60,
        "INKWELL_ENCRYPTION_KEYS": "k1:" + "A" * 43 + "=",
        "DATABASE_URL": "postgres://u@127.0.0.1/db",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "ALLOWED_HOSTS": "inkwell.example.com",
        "EMAIL_URL": "smtp://127.0.0.1:25",
        "STRIPE_SECRET_KEY": "sk_test_x",
        "STRIPE_WEBHOOK_SECRET": "whsec_x",
        "DJANGO_SETTINGS_MODULE": "saas.settings",
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"], env=env, capture_output=True, text=True
    )

    assert out.stdout.strip() == "True", out.stderr[-2000:]
