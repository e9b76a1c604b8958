"""The browser security headers on every kind of answer: a page, an API response, an error page;
and no template of ours that the Content-Security-Policy would refuse. tests/e2e/test_csp.py checks
the same in Chromium, page by page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import include, path

from tests.factories import ApiKeyFactory

STRICT_POLICY = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "connect-src": ["'self'"],
    "font-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'none'"],
    "frame-ancestors": ["'none'"],
    "form-action": ["'self'", "https://checkout.stripe.com", "https://billing.stripe.com"],
}
DENIED_FEATURES = ("camera", "microphone", "geolocation", "payment", "usb", "serial", "hid", "midi")


def _boom(request):
    raise RuntimeError("a bug in a view")


# This module is also the URLconf of the 500 test: the site's URLs plus a view that fails.
urlpatterns = [path("boom/", _boom), path("", include("saas.urls"))]
handler404 = "saas.views.not_found"
handler500 = "saas.views.server_error"


def policy_of(response) -> dict[str, list[str]]:
    """The Content-Security-Policy header as {directive: [sources]}."""
    header = response.headers["Content-Security-Policy"]
    directives = [part.split() for part in header.split(";") if part.strip()]
    return {name: sources for name, *sources in directives}


def assert_security_headers(response) -> None:
    assert policy_of(response) == STRICT_POLICY
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    features = dict(item.strip().split("=", 1) for item in response.headers["Permissions-Policy"].split(","))
    assert {feature: features.get(feature) for feature in DENIED_FEATURES} == dict.fromkeys(DENIED_FEATURES, "()")


@pytest.mark.django_db
def test_a_page_carries_the_strict_policy_and_the_other_headers(client, owner):
    client.force_login(owner)

    response = client.get("/generate/")

    assert response.status_code == 200
    assert_security_headers(response)


@pytest.mark.django_db
def test_an_api_response_carries_the_same_headers(client, owner):
    key = ApiKeyFactory(user=owner)

    response = client.get("/api/v1/ping", headers={"Authorization": f"Bearer {key.raw}"})

    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert_security_headers(response)


@pytest.mark.django_db
def test_the_not_found_page_carries_the_headers(client):
    response = client.get("/no-such-page/")

    assert response.status_code == 404
    assert_security_headers(response)


@pytest.mark.django_db
@pytest.mark.urls(__name__)
def test_the_server_error_page_carries_the_headers_and_nothing_inline(client):
    client.raise_request_exception = False

    response = client.get("/boom/")

    assert response.status_code == 500
    assert_security_headers(response)
    assert not INLINE.search(response.content.decode())


@pytest.mark.django_db
def test_no_directive_allows_inline_code_or_eval(client):
    header = client.get("/").headers["Content-Security-Policy"]

    assert "unsafe" not in header  # 'unsafe-inline', 'unsafe-eval', 'unsafe-hashes'
    assert "nonce-" not in header  # a nonce only on a page that uses one


@pytest.mark.django_db
def test_the_api_reference_runs_its_one_inline_script_by_nonce(client):
    response = client.get("/api/docs/")

    assert response.status_code == 200
    policy = policy_of(response)
    nonce = re.fullmatch(r"'nonce-([A-Za-z0-9+/=]+)'", policy["script-src"][1]).group(1)
    assert policy["script-src"] == ["'self'", f"'nonce-{nonce}'"]
    assert policy["style-src"] == ["'self'"]
    html = response.content.decode()
    inline_scripts = re.findall(r"<script(?![^>]*\bsrc=)([^>]*)>", html)
    assert inline_scripts == [f' nonce="{nonce}"']
    assert "<style" not in html and "style=" not in html
    # A new nonce each time: one seen in a page is no use for the next.
    assert policy_of(client.get("/api/docs/"))["script-src"][1] != f"'nonce-{nonce}'"


# What the policy refuses in HTML: a style="" attribute, an on...="" handler, a <style> element, and a
# <script> element with code in it (a src="" file or a type="application/json" data block is fine).
INLINE = re.compile(
    r"""\sstyle\s*=|\son[a-z]+\s*=\s*["']|<style[\s>]|<script(?![^>]*\b(?:src=|type="application/json"))[^>]*>\s*\S""",
    re.IGNORECASE,
)
# Templates that may inline a script because they carry the request's nonce.
NONCED = {"drf_spectacular/swagger_ui.html"}


def test_no_template_of_ours_has_inline_code_or_styles():
    root = Path(settings.BASE_DIR) / "templates"
    found = []
    for template in sorted(root.rglob("*.html")):
        name = template.relative_to(root).as_posix()
        text = template.read_text()
        if name in NONCED:
            text = re.sub(r'<script nonce="\{\{ request.csp_nonce \}\}">.*?</script>', "", text, flags=re.DOTALL)
        found += [f"{name}: {match.group(0).strip()!r}" for match in INLINE.finditer(text)]
    assert found == []
