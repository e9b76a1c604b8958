from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis

# Playwright's sync API runs an event loop in this thread; the ORM calls in the same tests are
# still plain synchronous code.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
_embedded = None


def pytest_configure(config) -> None:
    """Without REDIS_URL the suite starts its own Redis, as `make run` does."""
    global _embedded
    if not config.pluginmanager.hasplugin("django"):
        return  # `-p no:django`: the engine's tests (tests/engine), which need neither Django nor Redis
    from django.conf import settings

    if settings.REDIS_EMBEDDED:
        from saas.embedded import EmbeddedRedis

        _embedded = EmbeddedRedis(port=settings.EMBEDDED_REDIS_PORT)
        _embedded.start()
    # Stale broker messages or rate-limit counters from an earlier run must not leak in.
    redis.Redis.from_url(settings.REDIS_URL).flushdb()


def pytest_unconfigure(config) -> None:
    if _embedded is not None:
        _embedded.stop()


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    """allauth's rate-limit counters live in Redis; each test starts with none."""
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter(match="inkwell:*"):
        client.delete(key)
    yield


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    """The test model (the demo builder's untrained 'tiny' size), built once and kept in var/."""
    from django.conf import settings

    from inference.engine import build_demo_model

    path = Path(settings.DEMO_MODEL_PATH)
    if not (path / "config.json").exists():
        build_demo_model(path, size="tiny")
    return path


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def celery_worker(django_db_setup, django_db_blocker, artifacts_dir, tiny_model_path):
    """A real Celery worker process on the configured broker and the test database (one per test
    module, so modules that kill workers start from a clean slate)."""
    from tests.support import start_worker_ready

    with django_db_blocker.unblock():
        worker = start_worker_ready(artifacts_dir / "logs")
    yield worker
    worker.stop()


class WebServer:
    def __init__(self, url: str, mail_dir: Path, process):
        self.url = url
        self.mail_dir = mail_dir
        self.process = process

    def mails(self) -> list[str]:
        """Every message the server has sent, oldest first, as raw text."""
        files = sorted(self.mail_dir.glob("*.log"), key=lambda p: p.stat().st_mtime)
        return [f.read_text() for f in files]


@pytest.fixture(scope="session")
def web_server(django_db_setup, django_db_blocker, artifacts_dir, tmp_path_factory):
    """The real ASGI server (uvicorn) on the test database; mail goes to files the test reads."""
    import urllib.request

    from tests.support import free_port, start_web, wait_until

    mail_dir = tmp_path_factory.mktemp("mail")
    port = free_port()
    with django_db_blocker.unblock():
        web = start_web(artifacts_dir / "logs", port, EMAIL_URL=f"filemail:///{mail_dir}")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: urllib.request.urlopen(url + "/", timeout=2).status == 200,
            timeout=60,
            what="web server",
            process=web.process,
        )
    except Exception:
        web.stop()
        raise RuntimeError("the web server did not start:\n" + web.log()[-3000:]) from None
    yield WebServer(url, mail_dir, web)
    web.stop()


@pytest.fixture
def live_stripe(settings, monkeypatch):
    """Billing against "Stripe" (a secret key set, the sandbox off), with a recording HTTP client
    in place of Stripe's servers: ``live_stripe({(method, path prefix): response})`` returns it."""
    from billing import stripe_client
    from tests.billing import stripe_fakes as fake

    settings.STRIPE_SECRET_KEY = "sk_test_inkwell"
    settings.BILLING_SANDBOX = False

    def install(responses):
        recorder = fake.RecordingStripe(responses)
        monkeypatch.setattr(stripe_client, "http_client", recorder)
        return recorder

    return install


# --- the cast: the same people in every test --------------------------------------------------
# A directory whose tests need other numbers for the default plan overrides ``default_plan``
# in its conftest; the people stay the same.


@pytest.fixture
def default_plan(db):
    """The plan of everyone without a subscription."""
    from tests.factories import PlanFactory

    return PlanFactory(slug="free", name="Free", is_default=True, price_cents=0)


@pytest.fixture
def owner(default_plan):
    """The user a test acts for: owns the jobs, keys and subscription under test."""
    from tests.factories import UserFactory

    return UserFactory(email="owner@example.com")


@pytest.fixture
def other_user(default_plan):
    """Someone else, with an account of their own: must never see or change the owner's things."""
    from tests.factories import UserFactory

    return UserFactory(email="other@example.com")


@pytest.fixture
def staff_user(default_plan):
    """An operator: staff and superuser."""
    from tests.factories import UserFactory

    return UserFactory(email="staff@example.com", is_staff=True, is_superuser=True)


@pytest.fixture(autouse=True)
def _fresh_data_key_cache():
    """Each test starts with no unwrapped data key in memory: tables flushed or migrated back and
    forth between tests reuse key ids."""
    from core import crypto

    crypto.cache_clear()
    yield
