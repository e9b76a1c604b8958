"""The pricing page's button says what it does, in the README's words: Subscribe."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_a_signed_in_user_is_offered_to_subscribe_to_each_paid_plan(client, customer, team_plan):
    client.force_login(customer)

    page = client.get("/pricing/").content.decode()

    assert '<button type="submit">Subscribe to Pro</button>' in page
    assert '<button type="submit">Subscribe to Team</button>' in page
    assert "Choose" not in page


def test_a_visitor_is_sent_to_sign_up_first(client, free_plan, pro_plan):
    page = client.get("/pricing/").content.decode()

    assert "Start free, upgrade any time" in page
    assert "Subscribe to Pro" not in page
