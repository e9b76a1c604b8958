from __future__ import annotations

import pytest
from allauth.account.models import EmailAddress
from django.core import mail
from django.urls import reverse

from accounts.models import User
from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

SIGNUP = reverse("account_signup")
LOGIN = reverse("account_login")


def test_signup_creates_an_unverified_user_and_mails_the_link(client):
    response = client.post(SIGNUP, {"email": "New@Example.com", "password1": PASSWORD, "password2": PASSWORD})

    assert response.status_code == 302
    assert response.url == reverse("account_email_verification_sent")
    user = User.objects.get()
    assert user.email == "new@example.com"
    assert not EmailAddress.objects.get(user=user).verified
    assert len(mail.outbox) == 1
    assert "/accounts/confirm-email/" in mail.outbox[0].body


def test_signup_with_a_taken_email_says_so_and_creates_nothing(client):
    UserFactory(email="taken@example.com")

    response = client.post(SIGNUP, {"email": "TAKEN@example.com", "password1": PASSWORD, "password2": PASSWORD})

    assert response.status_code == 200
    assert "already registered with this email" in response.content.decode()
    assert User.objects.count() == 1
    assert mail.outbox == []


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short", "too short"),
        ("password1234", "too common"),
        ("1234567890123", "entirely numeric"),
    ],
)
def test_signup_with_a_bad_password_says_what_is_wrong_and_creates_nothing(client, password, message):
    response = client.post(SIGNUP, {"email": "new@example.com", "password1": password, "password2": password})

    assert response.status_code == 200
    assert message in response.content.decode()
    assert not User.objects.exists()


def test_signup_with_mismatched_passwords_is_refused(client):
    response = client.post(SIGNUP, {"email": "new@example.com", "password1": PASSWORD, "password2": PASSWORD + "x"})

    assert response.status_code == 200
    assert "You must type the same password each time" in response.content.decode()
    assert not User.objects.exists()


def test_login_with_a_wrong_password_says_so_and_does_not_sign_in(client):
    UserFactory(email="owner@example.com")

    response = client.post(LOGIN, {"login": "owner@example.com", "password": "not-the-password"})

    assert response.status_code == 200
    assert "email address and/or password you specified are not correct" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_login_before_verifying_the_email_is_held_at_verification(client):
    UserFactory(email="fresh@example.com", verified=False)

    response = client.post(LOGIN, {"login": "fresh@example.com", "password": PASSWORD})

    assert response.status_code == 302
    assert response.url == reverse("account_email_verification_sent")
    assert "_auth_user_id" not in client.session


def test_repeated_failed_logins_are_rate_limited(client):
    UserFactory(email="owner@example.com")

    responses = [client.post(LOGIN, {"login": "owner@example.com", "password": "wrong-password"}) for _ in range(6)]

    # Five failures per five minutes for one account, then even the right password is refused.
    assert [r.status_code for r in responses] == [200] * 5 + [429]
    assert "Too many failed login attempts" in responses[5].content.decode()
    right = client.post(LOGIN, {"login": "owner@example.com", "password": PASSWORD})
    assert right.status_code == 429
    assert "_auth_user_id" not in client.session


def test_passwords_are_hashed_with_argon2():
    user = UserFactory()

    assert user.password.startswith("argon2$")
