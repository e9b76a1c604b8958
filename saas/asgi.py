"""ASGI entry point: token streams are long-lived responses, so Inkwell is served by uvicorn."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from saas.logging import redact_api_keys_in_logs

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings")
application = get_asgi_application()
redact_api_keys_in_logs()
