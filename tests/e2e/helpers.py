from __future__ import annotations

import re

from tests.factories import PASSWORD


def verification_link(mails: list[str], email: str) -> str:
    """The confirmation link of the newest verification mail sent to ``email``."""
    for message in reversed(mails):
        if f"To: {email}" in message:
            match = re.search(r"https?://\S+/accounts/confirm-email/\S+/", message)
            if match:
                return match.group(0)
    raise AssertionError(f"no verification mail to {email} among {len(mails)} messages")


def sign_in(page, url: str, email: str) -> None:
    page.goto(url + "/accounts/login/")
    page.locator("#id_login").fill(email)
    page.locator("#id_password").fill(PASSWORD)
    page.get_by_role("button", name="Sign In").click()


def generate(page, prompt: str, max_new_tokens: int) -> None:
    """Fill the generate form (greedy, ``max_new_tokens``) and submit it."""
    page.get_by_role("textbox", name="Prompt").fill(prompt)
    page.get_by_text("Advanced settings").click()
    page.get_by_label("Max new tokens").fill(str(max_new_tokens))
    page.get_by_label("Temperature").fill("0")
    page.get_by_role("button", name="Generate").click()
