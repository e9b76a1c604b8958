"""Inkwell settings: every environment read happens here, through django-environ's typed helpers.

Profiles (``INKWELL_ENV``):
- ``local`` (default): DEBUG on, SQLite in var/, an embedded Redis started by ``make run``,
  mail printed to the console. Nothing to configure.
- ``test``: like local, but quiet and with a file-backed test database that a worker process
  started by the tests can share.
- ``production``: DEBUG off; SECRET_KEY, DATABASE_URL, REDIS_URL, ALLOWED_HOSTS and EMAIL_URL are
  required and have no default; secure cookies and HSTS.

DATABASE_URL and REDIS_URL, when set, win in every profile.
"""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path

import environ
from csp.constants import NONCE
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()

PROFILE = env.str("INKWELL_ENV", default="local")
if PROFILE not in {"local", "test", "production"}:
    raise ImproperlyConfigured(f"INKWELL_ENV must be local, test or production, not {PROFILE!r}")
PRODUCTION = PROFILE == "production"
TESTING = PROFILE == "test"


def _required_in_production(name: str, local_default):
    """Production has no default for a secret or an address: start-up fails without it."""
    if PRODUCTION and name not in env:
        raise ImproperlyConfigured(f"{name} must be set in the production profile")
    return local_default


DEBUG = env.bool("DJANGO_DEBUG", default=PROFILE == "local")
SECRET_KEY = env.str(
    "SECRET_KEY",
    default=_required_in_production("SECRET_KEY", "django-insecure-local-only-key-never-used-in-production"),
)
ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS", default=_required_in_production("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
)
# The operator account that `manage.py seed` creates once; a password is generated when unset.
ADMIN_EMAIL = env.str("INKWELL_ADMIN_EMAIL", default="admin@inkwell.local")
ADMIN_PASSWORD = env.str("INKWELL_ADMIN_PASSWORD", default=None)
# Where `make run` serves.
SERVE_HOST = env.str("HOST", default="127.0.0.1")
SERVE_PORT = env.int("PORT", default=8000)
# Task slots of a worker: one per job the engine can batch, plus a few for housekeeping.
WORKER_CONCURRENCY = env.int("WORKER_CONCURRENCY", default=0)  # 0: ENGINE_MAX_BATCH + 2
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "allauth.usersessions",
    "saas",
    "staff",
    "core",
    "accounts",
    "billing",
    "inference",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "saas.headers.PermissionsPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "allauth.usersessions.middleware.UserSessionsMiddleware",
    "accounts.middleware.CurrentWorkspaceMiddleware",
    "saas.middleware.StaffOnlyAdminMiddleware",
]

ROOT_URLCONF = "saas.urls"
WSGI_APPLICATION = "saas.wsgi.application"
ASGI_APPLICATION = "saas.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context_processors.workspaces",
                "billing.context_processors.billing",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
_sqlite_name = "test.sqlite3" if TESTING else "db.sqlite3"
DATABASES = {
    "default": env.db_url(
        "DATABASE_URL",
        default=_required_in_production("DATABASE_URL", f"sqlite:///{VAR_DIR / _sqlite_name}"),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server read while the worker writes; IMMEDIATE makes every transaction
    # take the write lock up front, so two processes never deadlock upgrading a read lock.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", "transaction_mode": "IMMEDIATE"}
    )
    DATABASES["default"]["OPTIONS"].setdefault("timeout", 20)
    # A file, not :memory:, so a worker process started by the tests can open the same database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
    VAR_DIR.mkdir(exist_ok=True)
else:
    # Under ASGI every request may run its database work on another thread, so Django's
    # persistent per-thread connections would pile up until PostgreSQL refuses new clients.
    # A psycopg connection pool per process instead: connections are reused, and bounded.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DATABASE_POOL_MIN", default=2),
        "max_size": env.int("DATABASE_POOL_MAX", default=20),
        "timeout": 10,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: broker, cache (rate limits), token streams ---------------------------------------
# Without REDIS_URL, local and test use an embedded Redis server that `make run` and the test
# suite start themselves (see saas/embedded.py), so the same code runs in every setup.
EMBEDDED_REDIS_PORT = env.int("INKWELL_EMBEDDED_REDIS_PORT", default=6391 if TESTING else 6390)
REDIS_EMBEDDED = "REDIS_URL" not in env and not PRODUCTION
REDIS_URL = env.str(
    "REDIS_URL", default=_required_in_production("REDIS_URL", f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0")
)

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "inkwell",
        "TIMEOUT": 300,
    }
}

# --- Celery ------------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
# Only the ping task stores a result (health and round-trip checks); jobs live in PostgreSQL.
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=REDIS_URL)
# The longest a single generation may run; the broker's visibility timeout must exceed it, or
# Redis would hand a still-running job to a second worker.
JOB_HARD_TIME_LIMIT = env.int("JOB_HARD_TIME_LIMIT", default=600)
JOB_SOFT_TIME_LIMIT = env.int("JOB_SOFT_TIME_LIMIT", default=JOB_HARD_TIME_LIMIT - 30)
BROKER_VISIBILITY_TIMEOUT = env.int("BROKER_VISIBILITY_TIMEOUT", default=JOB_HARD_TIME_LIMIT * 3)
if BROKER_VISIBILITY_TIMEOUT <= JOB_HARD_TIME_LIMIT:
    raise ImproperlyConfigured("BROKER_VISIBILITY_TIMEOUT must be longer than JOB_HARD_TIME_LIMIT")
WORKER_HEARTBEAT_SECONDS = env.int("WORKER_HEARTBEAT_SECONDS", default=10)
# A worker whose last heartbeat is older than this is considered gone.
WORKER_STALE_SECONDS = env.int("WORKER_STALE_SECONDS", default=WORKER_HEARTBEAT_SECONDS * 3)

# --- Generation -------------------------------------------------------------------------------
# Models users can pick: "name=source" pairs, comma-separated; a source is a Hugging Face hub id or
# a local path. The demo model is built locally by `manage.py build_demo_model` (make run does it).
DEMO_MODEL_PATH = VAR_DIR / "models" / ("test-tiny" if TESTING else "inkwell-demo")
_demo_name = "inkwell-tiny" if TESTING else "inkwell-demo"
INFERENCE_MODELS = dict(
    item.split("=", 1)
    for item in env.list("INFERENCE_MODELS", default=[f"{_demo_name}={DEMO_MODEL_PATH}"])
    if "=" in item
)
if not INFERENCE_MODELS:
    raise ImproperlyConfigured("INFERENCE_MODELS must list at least one name=source pair")
# Models served by an OpenAI-compatible inference server instead of this worker's engine: a JSON
# object {"<name in INFERENCE_MODELS>": {"url": ..., ...}}. The INFERENCE_MODELS source stays the
# model's tokenizer and config (prompt counting, limits); the server runs the weights.
_REMOTE_FIELDS = {"url", "model", "api_key_env", "timeout", "connect_timeout", "prompt"}


def _remote_server(name: str, spec) -> dict:
    """One INFERENCE_REMOTE entry, checked, with its defaults and its API key read."""
    where = f"INFERENCE_REMOTE[{name!r}]"
    if name not in INFERENCE_MODELS:
        raise ImproperlyConfigured(f"{where}: INFERENCE_MODELS has no model {name!r} (its tokenizer source)")
    if isinstance(spec, str):
        spec = {"url": spec}
    if not isinstance(spec, dict):
        raise ImproperlyConfigured(f"{where} must be a URL or an object with a url")
    unknown = set(spec) - _REMOTE_FIELDS
    if unknown:
        raise ImproperlyConfigured(f"{where}: unknown fields {sorted(unknown)}; known: {sorted(_REMOTE_FIELDS)}")
    url = str(spec.get("url", "")).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ImproperlyConfigured(f"{where}: url must be the server's http(s) base URL, like http://host:8000/v1")
    api_key = ""
    if spec.get("api_key_env"):
        if spec["api_key_env"] not in env:
            raise ImproperlyConfigured(f"{where}: the environment variable {spec['api_key_env']} is not set")
        api_key = env.str(spec["api_key_env"])
    timeouts = {key: spec.get(key, default) for key, default in (("timeout", 60), ("connect_timeout", 5))}
    for key, value in timeouts.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ImproperlyConfigured(f"{where}: {key} must be a positive number of seconds")
    if spec.get("prompt", "text") not in {"text", "token_ids"}:
        raise ImproperlyConfigured(f"{where}: prompt must be text or token_ids")
    return {
        "url": url,
        "model": str(spec.get("model") or INFERENCE_MODELS[name]),
        "api_key": api_key,
        "read_timeout": float(timeouts["timeout"]),
        "connect_timeout": float(timeouts["connect_timeout"]),
        "prompt_as_ids": spec.get("prompt") == "token_ids",
    }


try:
    _remote = env.json("INFERENCE_REMOTE", default={})
except ValueError as exc:
    raise ImproperlyConfigured(f"INFERENCE_REMOTE is not valid JSON: {exc}") from None
if not isinstance(_remote, dict):
    raise ImproperlyConfigured('INFERENCE_REMOTE must be a JSON object: {"<model name>": {"url": ...}}')
INFERENCE_REMOTE = {name: _remote_server(name, spec) for name, spec in _remote.items()}
INFERENCE_DEVICE = env.str("INFERENCE_DEVICE", default="auto")  # auto | cpu | cuda | cuda:N
# auto: bf16 on CUDA (fp16 where bf16 is not supported), bf16 on a CPU with AMX, fp32 on other CPUs.
# The integer options quantize linear layers through torchao; the engine refuses one that cannot
# run on the device, naming those that can. The same names as the engine's PRECISIONS.
INFERENCE_DTYPES = ("auto", "float32", "bfloat16", "float16", "int8", "int8-weight", "int4-weight")
INFERENCE_DTYPE = env.str("INFERENCE_DTYPE", default="auto")
if INFERENCE_DTYPE not in INFERENCE_DTYPES:
    raise ImproperlyConfigured(f"INFERENCE_DTYPE must be one of {', '.join(INFERENCE_DTYPES)}, not {INFERENCE_DTYPE!r}")
# "transformers" runs the models; "noop" answers every job at once with no text (queue benchmarks).
INFERENCE_ENGINE = env.str("INFERENCE_ENGINE", default="transformers")
ENGINE_MAX_BATCH = env.int("ENGINE_MAX_BATCH", default=32)
ENGINE_PREFILL_TOKENS = env.int("ENGINE_PREFILL_TOKENS", default=1024)
WORKER_CONCURRENCY = WORKER_CONCURRENCY or ENGINE_MAX_BATCH + 2
# torch threads per worker process: torch threads x worker processes must not exceed the cores.
TORCH_THREADS = env.int("TORCH_THREADS", default=0)  # 0: all cores of the host
JOB_MAX_ATTEMPTS = env.int("JOB_MAX_ATTEMPTS", default=3)
# A queued job whose message may have been lost (say, Redis restarted empty) is sent again after this.
JOB_REQUEUE_AFTER_SECONDS = env.int("JOB_REQUEUE_AFTER_SECONDS", default=600)
SWEEP_INTERVAL_SECONDS = env.int("SWEEP_INTERVAL_SECONDS", default=30)
# `manage.py maintenance` runs the sweeper every SWEEP_INTERVAL_SECONDS and applies the plans'
# text retention every RETENTION_INTERVAL_SECONDS, straight against the database (never through
# the broker, where they would wait behind the generation backlog).
RETENTION_INTERVAL_SECONDS = env.int("RETENTION_INTERVAL_SECONDS", default=3600)
# /healthz reports maintenance down when no sweep has finished for this long.
MAINTENANCE_STALE_SECONDS = env.int("MAINTENANCE_STALE_SECONDS", default=SWEEP_INTERVAL_SECONDS * 3)
STREAM_TTL_SECONDS = env.int("STREAM_TTL_SECONDS", default=3600)
# Event streams one user may hold open at once (the page, the REST and the /v1 streams together;
# each holds a Redis connection). Past it: 429. Counted in Redis across processes.
MAX_STREAMS_PER_USER = env.int("MAX_STREAMS_PER_USER", default=8)
# Requests per minute and user to the dashboard's live prompt-token counter. Past it: 429.
TOKEN_COUNTS_PER_MINUTE = env.int("TOKEN_COUNTS_PER_MINUTE", default=120)

# --- Billing (Stripe) ---------------------------------------------------------------------------
# Stored webhook payloads keep names, emails and addresses this many days, then only ids and amounts.
BILLING_EVENT_RETENTION_DAYS = env.int("BILLING_EVENT_RETENTION_DAYS", default=30)
STRIPE_SECRET_KEY = env.str("STRIPE_SECRET_KEY", default=_required_in_production("STRIPE_SECRET_KEY", ""))
STRIPE_WEBHOOK_SECRET = env.str(
    "STRIPE_WEBHOOK_SECRET", default=_required_in_production("STRIPE_WEBHOOK_SECRET", "whsec_inkwell_sandbox_local")
)
# The API version every request and every webhook payload is read with (stripe-python 16.1's own).
STRIPE_API_VERSION = "2026-10-28.endive"
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="")  # e.g. a localstripe server in tests
STRIPE_DASHBOARD_URL = env.str("STRIPE_DASHBOARD_URL", default="https://dashboard.stripe.com")
# Without a Stripe key, local and test run billing in a sandbox that plays Stripe's part: its
# checkout page sends the same signed events to the same webhook endpoint. Never in production.
BILLING_SANDBOX = not STRIPE_SECRET_KEY
if PRODUCTION and BILLING_SANDBOX:
    raise ImproperlyConfigured("the billing sandbox cannot run in production: set STRIPE_SECRET_KEY")
BILLING_GRACE_DAYS = env.int("BILLING_GRACE_DAYS", default=3)
# Days an invitation link to a workspace stays valid (it also works only once).
INVITATION_DAYS = env.int("INVITATION_DAYS", default=7)
# Hours a data export's download link works once the archive is ready; then the archive is deleted.
EXPORT_LINK_HOURS = env.int("EXPORT_LINK_HOURS", default=24)
# What one GPU-hour costs you, for the business dashboard's margin (in the plans' currency).
GPU_HOUR_COST = env.float("GPU_HOUR_COST", default=2.50)
WEBHOOK_TOLERANCE_SECONDS = 300

# --- Encryption at rest ------------------------------------------------------------------------
# Customers' texts (prompts, chat turns, outputs, stop sequences, live token streams, exports) are
# sealed with AES-256-GCM under a data key per workspace; data keys are wrapped by these master
# keys. INKWELL_ENCRYPTION_KEYS: "id:base64-of-32-bytes" entries, comma-separated, newest first (the
# newest wraps new data keys; older ones only unwrap until `manage.py encryption_rotate` has moved
# everything off them). `manage.py encryption_keygen` prints a new entry. Production has no default;
# local creates one key once in var/encryption.key (back it up: without it var/'s texts are
# unreadable); test uses a fixed throwaway key.
_LOCAL_KEY_FILE = VAR_DIR / "encryption.key"


def _keyring_check(spec: str) -> None:
    # Here, not at the top: settings load before apps, and core.crypto needs none of them.
    from core.crypto import KeyRing

    KeyRing(spec)


def _local_encryption_keys() -> str:
    if TESTING:
        # 32 fixed bytes: tests only, never a real deployment (production requires the variable).
        return "test:aW5rd2VsbC10ZXN0LW9ubHktMzItYnl0ZS1rZXkhISE="
    if not _LOCAL_KEY_FILE.exists():
        VAR_DIR.mkdir(exist_ok=True)
        entry = "local1:" + base64.b64encode(os.urandom(32)).decode()
        fd = os.open(_LOCAL_KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(entry + "\n")
        print(
            f"Created the local master encryption key in {_LOCAL_KEY_FILE.relative_to(BASE_DIR)} "
            "(keep it: the texts stored in var/ cannot be read without it).",
            file=sys.stderr,
        )
    return _LOCAL_KEY_FILE.read_text().strip()


ENCRYPTION_KEYS = env.str("INKWELL_ENCRYPTION_KEYS", default="")
if not ENCRYPTION_KEYS:
    if PRODUCTION:  # set but empty counts as missing: never a made-up key in production
        raise ImproperlyConfigured("INKWELL_ENCRYPTION_KEYS must be set in the production profile")
    ENCRYPTION_KEYS = _local_encryption_keys()
_keyring_check(ENCRYPTION_KEYS)  # a malformed ring stops start-up here, with what to change
# Seconds a process keeps using a workspace's current data key before asking the database again
# (after `encryption_rotate --reencrypt` makes new data keys, the old ones stop sealing within this).
ENCRYPTION_KEY_CACHE_SECONDS = 60

# --- Accounts ---------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "home"
ACCOUNT_LOGOUT_REDIRECT_URL = "home"
ACCOUNT_ADAPTER = "accounts.adapter.AccountAdapter"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_CONFIRM_EMAIL_ON_GET = False
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = False
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_PREVENT_ENUMERATION = False  # a taken email is told on sign-up, as users expect
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[Inkwell] "
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "https" if PRODUCTION else "http"
# allauth's defaults, stated so nobody turns them off by accident; counters live in the cache.
ACCOUNT_RATE_LIMITS = {
    "login": "30/m/ip",
    "login_failed": "10/m/ip,5/5m/key",
    "signup": "20/m/ip",
    "confirm_email": "1/3m/key",
    "reset_password": "20/m/ip,5/m/key",
    "reset_password_from_key": "20/m/ip",
    "change_password": "5/m/user",
}
# Staff must enrol in two-factor authentication before the admin and staff pages open.
STAFF_REQUIRE_MFA = env.bool("STAFF_REQUIRE_MFA", default=PRODUCTION)
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = "Inkwell"
USERSESSIONS_TRACK_ACTIVITY = True
# Sensitive actions ask for the password again (allauth's re-authentication) unless it was confirmed
# within the timeout: adding or removing an email address and setting a password (allauth's pages;
# changing a password asks for the old one), two-factor changes (allauth.mfa requires it by default),
# creating an API key, exporting data and deleting an account or a workspace (our views).
# Signing in does not count: allauth counts only an explicit confirmation.
ACCOUNT_REAUTHENTICATION_REQUIRED = True
ACCOUNT_REAUTHENTICATION_TIMEOUT = 300

# --- Email ---------------------------------------------------------------------------------------
_email = env.email_url("EMAIL_URL", default=_required_in_production("EMAIL_URL", "consolemail://"))
EMAIL_BACKEND = _email["EMAIL_BACKEND"]
EMAIL_HOST = _email["EMAIL_HOST"] or "localhost"
EMAIL_PORT = _email["EMAIL_PORT"] or 25
EMAIL_HOST_USER = _email["EMAIL_HOST_USER"] or ""
EMAIL_HOST_PASSWORD = _email["EMAIL_HOST_PASSWORD"] or ""
EMAIL_USE_TLS = _email.get("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = _email.get("EMAIL_USE_SSL", False)
# filemail:///abs/path writes one file per message; local mail otherwise prints to the console.
EMAIL_FILE_PATH = _email["EMAIL_FILE_PATH"] or str(VAR_DIR / "mail")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Inkwell <no-reply@inkwell.local>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- I18N / static --------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Outside production the app serves static files straight from the source folders.
WHITENOISE_USE_FINDERS = not PRODUCTION
# Outside production there is no collectstatic step, so no STATIC_ROOT to warn about.
STATIC_ROOT = STATIC_ROOT if PRODUCTION else None
WHITENOISE_AUTOREFRESH = DEBUG

# --- API ------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "billing.permissions.PlanAllowsApi",
        "accounts.authentication.KeyScopeAllows",
    ],
    "EXCEPTION_HANDLER": "core.api.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Inkwell API",
    "DESCRIPTION": "Generation jobs, usage, and an OpenAI-compatible surface under /v1/.",
    "VERSION": "1.0.0",
    # Swagger UI and Redoc from the drf-spectacular-sidecar package: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- Security ---------------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# Content-Security-Policy (django-csp 4): scripts, styles, fonts and fetches only from this origin;
# no inline <script>, <style>, style="" or on...="" anywhere (our templates use static files, and a
# third-party template that must inline a script gets the request's nonce: the Swagger UI page).
# data: images: allauth's TOTP QR code. Forms post here, and Stripe Checkout and the Customer
# Portal are reached by a form whose answer redirects there, which Chromium checks against
# form-action too. tests/e2e/test_csp.py visits every page in Chromium and fails on a violation.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'", NONCE],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'", "https://checkout.stripe.com", "https://billing.stripe.com"],
    }
}
# Browser features no page uses, turned off for every page and frame (saas.headers).
PERMISSIONS_POLICY = {
    feature: []
    for feature in (
        "accelerometer", "camera", "display-capture", "geolocation", "gyroscope", "hid",
        "magnetometer", "microphone", "midi", "payment", "serial", "usb", "xr-spatial-tracking",
    )
}  # fmt: skip
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    # /healthz is probed over plain HTTP by load balancers inside the network.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="WARNING" if TESTING else "INFO")},
}
