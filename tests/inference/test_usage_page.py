from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_the_usage_page_states_that_text_delivered_is_text_charged(client, owner):
    client.force_login(owner)

    page = client.get("/usage/").content.decode()

    assert "Every token you receive is charged" in page
    assert "fails on our side before producing anything costs nothing" in page
