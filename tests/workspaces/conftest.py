"""The cast of a team: a workspace (Acme) on a per-seat plan with five seats, its owner, an admin,
a member and a second member (the colleague); a second workspace (Globex) with its own owner; and an
outsider who belongs to neither."""

from __future__ import annotations

import pytest

from accounts import teams
from accounts.models import WorkspaceRole
from tests.factories import PlanFactory, SubscriptionFactory, UserFactory

SEATS = 5
RIVAL_SEATS = 2


@pytest.fixture(autouse=True)
def _quick_passwords(settings):
    """Nobody here signs in with a password (browsers use force_login): a quick hasher saves a
    third of a second per person in every test's cast."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def default_plan(db, tiny_model_path):
    """Everyone's personal workspace: with API access, so an outsider has keys to try."""
    return PlanFactory(
        slug="free", name="Free", is_default=True, price_cents=0, api_access=True, monthly_token_allowance=20_000,
        max_new_tokens=200, max_prompt_tokens=200, max_concurrent_jobs=50, requests_per_minute=1000,
    )  # fmt: skip


@pytest.fixture
def team_plan(db, tiny_model_path):
    """Sold per seat: 10,000 tokens and $15 a seat."""
    return PlanFactory(
        slug="team", name="Team", per_seat=True, price_cents=1500, stripe_price_id="price_TestTeamSeat01",
        monthly_token_allowance=10_000, max_new_tokens=200, max_prompt_tokens=200, max_concurrent_jobs=100,
        requests_per_minute=1000, api_access=True,
    )  # fmt: skip


@pytest.fixture
def team(owner, team_plan):
    """Acme: the owner's team workspace, subscribed to the Team plan with five paid seats."""
    workspace = teams.workspace_create(owner=owner, name="Acme")
    SubscriptionFactory(workspace=workspace, plan=team_plan, seats=SEATS, paid_seats=SEATS)
    return workspace


def _join(workspace, email: str, role: str):
    user = UserFactory(email=email)
    teams.member_add(workspace=workspace, user=user, role=role, seats=SEATS)
    return user


@pytest.fixture
def admin(team):
    return _join(team, "admin@example.com", WorkspaceRole.ADMIN)


@pytest.fixture
def member(team):
    return _join(team, "member@example.com", WorkspaceRole.MEMBER)


@pytest.fixture
def colleague(team):
    """A second member of Acme: shares the pool with ``member`` but not their history."""
    return _join(team, "colleague@example.com", WorkspaceRole.MEMBER)


@pytest.fixture
def rival(other_user, team_plan):
    """Globex: another team, owned by ``other_user``, with a subscription of its own."""
    workspace = teams.workspace_create(owner=other_user, name="Globex")
    SubscriptionFactory(workspace=workspace, plan=team_plan, seats=RIVAL_SEATS, paid_seats=RIVAL_SEATS)
    return workspace


@pytest.fixture
def outsider(default_plan):
    """Signed up, in no workspace but their own."""
    return UserFactory(email="outsider@example.com")


@pytest.fixture
def deliveries(monkeypatch) -> list[tuple[str, list[dict]]]:
    """The sandbox's Stripe events, kept here instead of sent by Celery: (webhook URL, events)."""
    sent: list[tuple[str, list[dict]]] = []
    monkeypatch.setattr("billing.tasks.sandbox_deliver.delay", lambda url, events: sent.append((url, events)))
    return sent
