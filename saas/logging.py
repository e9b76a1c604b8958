from __future__ import annotations

import logging
import re

KEY_PATTERN = re.compile(r"ink_[0-9A-Za-z]+")


class RedactApiKeys(logging.Filter):
    """A key sent where it should not be (a URL) must still never be written to a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(KEY_PATTERN.sub("ink_[redacted]", a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = KEY_PATTERN.sub("ink_[redacted]", record.msg)
        return True


def redact_api_keys_in_logs() -> None:
    for name in ("uvicorn.access", "uvicorn.error", "django.request", "django.server"):
        logging.getLogger(name).addFilter(RedactApiKeys())
