"""One domain error for every service: a code clients can branch on, a message people can act on."""

from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    status_code = 400
    error_type = "invalid_request_error"

    def __init__(
        self,
        message: str,
        *,
        code: str = "invalid_request",
        param: str | None = None,
        status_code: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        if status_code is not None:
            self.status_code = status_code
        self.extra = extra or {}

    def as_dict(self) -> dict[str, Any]:
        return {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code, **self.extra}


class NotFound(ApplicationError):
    status_code = 404
    error_type = "not_found_error"

    def __init__(self, message: str = "Not found.", **kwargs) -> None:
        super().__init__(message, code=kwargs.pop("code", "not_found"), **kwargs)


class QuotaExceeded(ApplicationError):
    # 402, so clients can tell an empty allowance from a rate limit (429).
    status_code = 402
    error_type = "insufficient_quota"


class RateLimited(ApplicationError):
    status_code = 429
    error_type = "rate_limit_error"


class Conflict(ApplicationError):
    status_code = 409
    error_type = "invalid_request_error"
