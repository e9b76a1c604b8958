"""The sign-in form in real Chromium: "Remember me" is one line, its box before its label, at desktop
and phone widths."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e

WIDTHS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 375, "height": 740}}


@pytest.mark.parametrize("viewport", WIDTHS.values(), ids=WIDTHS.keys())
def test_the_remember_me_checkbox_sits_on_its_labels_line(browser, web_server, artifacts_dir, viewport):
    context = browser.new_context(viewport=viewport)
    try:
        page = context.new_page()
        page.goto(web_server.url + "/accounts/login/")
        checkbox = page.get_by_role("checkbox", name="Remember Me")
        label = page.locator("label[for=id_remember]")
        box, text = checkbox.bounding_box(), label.bounding_box()
        page.screenshot(path=str(artifacts_dir / f"sign-in-{viewport['width']}.png"), full_page=True)
    finally:
        context.close()

    assert box["y"] < text["y"] + text["height"] and text["y"] < box["y"] + box["height"], (box, text)
    assert box["x"] + box["width"] <= text["x"], (box, text)
    assert text["x"] + text["width"] <= viewport["width"], (box, text)
