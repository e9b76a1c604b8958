from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support import BASE_DIR

PRODUCTION = {
    "INKWELL_ENV": "production",
    "SECRET_KEY": "x" * 64,
    "INKWELL_ENCRYPTION_KEYS": "k2:" + "B" * 43 + "=,k1:" + "A" * 43 + "=",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/inkwell",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "ALLOWED_HOSTS": "inkwell.example.com",
    "EMAIL_URL": "smtp://mail.example.com:587",
    "STRIPE_SECRET_KEY": "sk_test_ci",
    "STRIPE_WEBHOOK_SECRET": "whsec_ci",
}


def _load_settings(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in PRODUCTION}
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; print(settings.DEBUG, settings.SECURE_HSTS_SECONDS)"],
        cwd=BASE_DIR,
        env={**clean, "DJANGO_SETTINGS_MODULE": "saas.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_profile_starts_with_every_required_setting():
    result = _load_settings(PRODUCTION)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "31536000"]


@pytest.mark.parametrize(
    "missing",
    [
        "SECRET_KEY",
        "INKWELL_ENCRYPTION_KEYS",
        "DATABASE_URL",
        "REDIS_URL",
        "ALLOWED_HOSTS",
        "EMAIL_URL",
        "STRIPE_SECRET_KEY",
        "STRIPE_WEBHOOK_SECRET",
    ],
)
def test_production_profile_refuses_to_start_without_a_required_setting(missing):
    env = {k: v for k, v in PRODUCTION.items() if k != missing}

    result = _load_settings(env)

    assert result.returncode != 0
    assert f"{missing} must be set in the production profile" in result.stderr


@pytest.mark.parametrize(
    ("keys", "says"),
    [
        ("k1:short", "key 'k1' is not valid base64"),
        ("k1:" + "A" * 22 + "==", "key 'k1' is 16 bytes; AES-256 needs 32"),
        ("", "INKWELL_ENCRYPTION_KEYS must be set"),
    ],
)
def test_production_refuses_to_start_with_unusable_master_keys(keys, says):
    result = _load_settings({**PRODUCTION, "INKWELL_ENCRYPTION_KEYS": keys})

    assert result.returncode != 0
    assert says in result.stderr


def test_an_unknown_profile_is_refused():
    result = _load_settings({"INKWELL_ENV": "staging"})

    assert result.returncode != 0
    assert "INKWELL_ENV must be local, test or production" in result.stderr


def test_the_billing_sandbox_cannot_run_in_production():
    result = _load_settings({**PRODUCTION, "STRIPE_SECRET_KEY": ""})

    assert result.returncode != 0
    assert "the billing sandbox cannot run in production" in result.stderr
