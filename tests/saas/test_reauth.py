"""Re-authentication (allauth's) before sensitive actions: creating an API key, deleting the account
or a workspace, changing email addresses, two-factor changes. The password is asked when the
action is about to happen, unless it was confirmed within ACCOUNT_REAUTHENTICATION_TIMEOUT; once it
is, allauth runs the request the user had sent, so nothing they typed is lost."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from allauth.account.internal.flows import login, reauthentication
from allauth.account.models import EmailAddress
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from django.conf import settings
from django.test import Client

from accounts.models import ApiKey, User, Workspace, WorkspaceRole
from accounts.teams import member_add, workspace_create
from accounts.workspaces import SESSION_KEY
from tests.factories import PASSWORD, PlanFactory, SubscriptionFactory, UserFactory

pytestmark = pytest.mark.django_db

REAUTH = "/accounts/reauthenticate/"


@pytest.fixture
def signed_in(client, owner):
    """The owner, signed in with their password through allauth's form a moment ago."""
    response = client.post("/accounts/login/", {"login": owner.email, "password": PASSWORD})
    assert response.status_code == 302, response.content.decode()[:500]
    return client


def password_confirm(client, password: str = PASSWORD, *, asked=None):
    """Type the password on allauth's page: the one a refused request was sent to (``asked``),
    which then runs that request, or the page opened on its own."""
    return client.post(asked.url if asked is not None else REAUTH + "?next=/", {"password": password})


@pytest.fixture
def later(monkeypatch):
    """Move allauth's clock ``seconds`` ahead: the one that stamps a confirmation and the one that
    judges its age."""

    def move(seconds: float) -> None:
        clock = SimpleNamespace(time=lambda: time.time() + seconds)
        for module in (login, reauthentication):
            monkeypatch.setattr(module, "time", clock)

    return move


def _asks_password(response, next_path: str) -> bool:
    return response.status_code == 302 and response.url == f"{REAUTH}?next={next_path.replace('/', '%2F')}"


@pytest.fixture
def team(owner, other_user):
    """Acme, the owner's team, with another member in it; the owner's browser works there."""
    plan = PlanFactory(slug="team", per_seat=True, price_cents=9900, stripe_price_id="price_sandbox_team")
    workspace = workspace_create(owner=owner, name="Acme")
    SubscriptionFactory(workspace=workspace, plan=plan, seats=3, paid_seats=3)
    member_add(workspace=workspace, user=other_user, role=WorkspaceRole.ADMIN, seats=3)
    return workspace


def _work_in(client, workspace) -> None:
    session = client.session
    session[SESSION_KEY] = workspace.pk
    session.save()


# --- API keys -----------------------------------------------------------------------------------


def test_signing_in_is_not_a_confirmation_a_key_asks_for_the_password_then_appears(signed_in, owner):
    """allauth counts only an explicit confirmation, not the sign-in: the first key of a session
    asks for the password; after it, the key typed in the form is made and shown once."""
    asked = signed_in.post("/account/api/", {"name": "laptop", "scope": "read"})

    assert _asks_password(asked, "/account/api/")
    assert not ApiKey.objects.filter(user=owner).exists()

    shown = password_confirm(signed_in, asked=asked)

    key = ApiKey.objects.get(user=owner)
    assert (key.name, key.scope) == ("laptop", "read")  # what the user typed, not retyped
    assert shown.status_code == 200
    assert shown.context["created"]["key"] == key
    assert shown.context["created"]["raw"] in shown.content.decode()


def test_a_key_is_made_at_once_within_the_timeout_and_asks_again_after_it(signed_in, owner, later):
    password_confirm(signed_in)

    first = signed_in.post("/account/api/", {"name": "ci", "scope": "write"})
    later(settings.ACCOUNT_REAUTHENTICATION_TIMEOUT - 5)
    second = signed_in.post("/account/api/", {"name": "ci-2", "scope": "write"})
    later(settings.ACCOUNT_REAUTHENTICATION_TIMEOUT + 1)
    third = signed_in.post("/account/api/", {"name": "ci-3", "scope": "write"})

    assert first.status_code == second.status_code == 200
    assert _asks_password(third, "/account/api/")
    assert sorted(ApiKey.objects.filter(user=owner).values_list("name", flat=True)) == ["ci", "ci-2"]


def test_the_keys_page_and_an_invalid_form_do_not_ask_for_the_password(signed_in, owner):
    page = signed_in.get("/account/api/")
    invalid = signed_in.post("/account/api/", {"name": "", "scope": "write"})

    assert page.status_code == 200
    assert invalid.status_code == 200 and invalid.context["form"].errors["name"]
    assert not ApiKey.objects.filter(user=owner).exists()


def test_a_wrong_password_makes_no_key(signed_in, owner):
    asked = signed_in.post("/account/api/", {"name": "laptop", "scope": "read"})

    refused = password_confirm(signed_in, "not-my-password", asked=asked)

    assert refused.status_code == 200 and refused.context["form"].errors
    assert not ApiKey.objects.filter(user=owner).exists()


# --- deleting the account -------------------------------------------------------------------------


def test_deleting_the_account_asks_for_the_password_then_deletes_it(signed_in, owner):
    asked = signed_in.post("/account/delete/", {"confirm_email": owner.email})

    assert _asks_password(asked, "/account/delete/")
    assert User.objects.filter(pk=owner.pk).exists()

    done = password_confirm(signed_in, asked=asked)

    assert done.status_code == 302 and done.url == "/"
    assert not User.objects.filter(pk=owner.pk).exists()


def test_a_wrong_email_is_told_on_the_page_before_any_password(signed_in, owner):
    wrong = signed_in.post("/account/delete/", {"confirm_email": "nope@example.com"})

    assert wrong.status_code == 200
    assert "not this account" in wrong.content.decode()
    assert User.objects.filter(pk=owner.pk).exists()


def test_deleting_the_account_after_the_timeout_asks_again(signed_in, owner, later):
    password_confirm(signed_in)
    later(settings.ACCOUNT_REAUTHENTICATION_TIMEOUT + 1)

    asked = signed_in.post("/account/delete/", {"confirm_email": owner.email})

    assert _asks_password(asked, "/account/delete/")
    assert User.objects.filter(pk=owner.pk).exists()


# --- deleting a workspace ---------------------------------------------------------------------------


def test_deleting_a_workspace_asks_the_owner_for_the_password_then_deletes_it(signed_in, team):
    _work_in(signed_in, team)

    asked = signed_in.post("/workspace/delete/", {"confirm": "Acme"})

    assert _asks_password(asked, "/workspace/delete/")
    assert Workspace.objects.filter(pk=team.pk).exists()

    done = password_confirm(signed_in, asked=asked)

    assert done.status_code == 302 and done.url == "/generate/"
    assert not Workspace.objects.filter(pk=team.pk).exists()


def test_deleting_a_workspace_after_the_timeout_asks_again(signed_in, team, later):
    _work_in(signed_in, team)
    password_confirm(signed_in)
    later(settings.ACCOUNT_REAUTHENTICATION_TIMEOUT + 1)

    asked = signed_in.post("/workspace/delete/", {"confirm": "Acme"})

    assert _asks_password(asked, "/workspace/delete/")
    assert Workspace.objects.filter(pk=team.pk).exists()


def test_a_wrong_name_or_a_role_that_may_not_delete_is_told_before_any_password(signed_in, team, other_user):
    _work_in(signed_in, team)
    wrong = signed_in.post("/workspace/delete/", {"confirm": "acme"})

    admin = Client()
    admin.post("/accounts/login/", {"login": other_user.email, "password": PASSWORD})
    _work_in(admin, team)
    refused = admin.post("/workspace/delete/", {"confirm": "Acme"})

    assert wrong.status_code == 302 and wrong.url == "/workspace/members/"
    assert refused.status_code == 403
    assert Workspace.objects.filter(pk=team.pk).exists()


# --- allauth's own pages: email addresses, password, two-factor -------------------------------------


def test_adding_an_email_address_asks_for_the_password_then_adds_it(signed_in, owner, later):
    password_confirm(signed_in)
    later(settings.ACCOUNT_REAUTHENTICATION_TIMEOUT + 1)

    asked = signed_in.post("/accounts/email/", {"action_add": "", "email": "second@example.com"})

    assert _asks_password(asked, "/accounts/email/")
    assert not EmailAddress.objects.filter(email="second@example.com").exists()

    password_confirm(signed_in, asked=asked)

    assert EmailAddress.objects.filter(user=owner, email="second@example.com", verified=False).exists()


def test_changing_the_password_needs_the_current_one(signed_in, owner):
    refused = signed_in.post(
        "/accounts/password/change/",
        {"oldpassword": "not-my-password", "password1": "a-new-long-passphrase", "password2": "a-new-long-passphrase"},
    )

    owner.refresh_from_db()
    assert refused.status_code == 200 and refused.context["form"].errors["oldpassword"]
    assert owner.check_password(PASSWORD)


@pytest.mark.parametrize("path", ["/accounts/2fa/totp/activate/", "/accounts/2fa/recovery-codes/generate/"])
def test_two_factor_changes_ask_for_the_password_unless_just_confirmed(signed_in, later, path):
    asked = signed_in.get(path)
    password_confirm(signed_in)
    opened = signed_in.get(path)
    later(settings.ACCOUNT_REAUTHENTICATION_TIMEOUT + 1)
    asked_again = signed_in.get(path)

    assert _asks_password(asked, path)
    assert opened.status_code == 200
    assert _asks_password(asked_again, path)


def test_turning_two_factor_off_asks_for_the_password_then_turns_it_off(signed_in, owner, later):
    TOTP.activate(owner, generate_totp_secret())
    password_confirm(signed_in)
    later(settings.ACCOUNT_REAUTHENTICATION_TIMEOUT + 1)

    asked = signed_in.post("/accounts/2fa/totp/deactivate/")

    assert _asks_password(asked, "/accounts/2fa/totp/deactivate/")
    assert Authenticator.objects.filter(user=owner, type=Authenticator.Type.TOTP).exists()

    password_confirm(signed_in, asked=asked)

    assert not Authenticator.objects.filter(user=owner, type=Authenticator.Type.TOTP).exists()


def test_a_session_without_any_confirmation_is_asked_too(client, owner):
    """A browser signed in some other way than the password form (as the admin or tests do) has
    no confirmation on record: it is asked like everyone."""
    client.force_login(owner)

    asked = client.post("/account/api/", {"name": "x", "scope": "read"})

    assert _asks_password(asked, "/account/api/")
    assert not ApiKey.objects.filter(user=owner).exists()


def test_staff_is_asked_like_anyone(client, staff_user):
    client.post("/accounts/login/", {"login": staff_user.email, "password": PASSWORD})

    asked = client.post("/account/delete/", {"confirm_email": staff_user.email})

    assert _asks_password(asked, "/account/delete/")
    assert User.objects.filter(pk=staff_user.pk).exists()


def test_another_users_session_confirmation_does_not_carry_over(client, owner):
    """A confirmation belongs to the user who gave it: a second user signing in on the same browser
    starts unconfirmed."""
    client.post("/accounts/login/", {"login": owner.email, "password": PASSWORD})
    password_confirm(client)
    client.post("/accounts/logout/")
    second = UserFactory(email="second-user@example.com")
    client.post("/accounts/login/", {"login": second.email, "password": PASSWORD})

    asked = client.post("/account/api/", {"name": "x", "scope": "read"})

    assert _asks_password(asked, "/account/api/")
