"""The API's shared parts: one error envelope (OpenAI's shape), the one way a JSON body is read,
and the headers every response carries."""

from __future__ import annotations

import json
import logging
import re
from itertools import accumulate
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, JsonResponse
from rest_framework import exceptions, parsers
from rest_framework.response import Response

from core.errors import ApplicationError

logger = logging.getLogger(__name__)

# No request of this API nests deeper than a few levels (messages -> turn -> content); the
# limit keeps recursion in the parser and in every walk over a body far from Python's own.
MAX_JSON_DEPTH = 32
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKET = re.compile(r"[\[\]{}]")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def error_body(message: str, *, type: str, code: str, param: str | None = None, **extra) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code, **extra}}


def error_response(error: ApplicationError) -> JsonResponse:
    return JsonResponse({"error": error.as_dict()}, status=error.status_code)


def has_lone_surrogate(text: str) -> bool:
    """A UTF-16 surrogate on its own (JSON's "\\ud800") is no character: UTF-8, the tokenizers
    and PostgreSQL all refuse it."""
    return _SURROGATE.search(text) is not None


def _nesting_depth(text: str) -> int:
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return 0  # cannot nest deeper than it has brackets: the usual body stops here
    brackets = _BRACKET.findall(_JSON_STRING.sub("", text))  # brackets inside strings do not nest
    return max(accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _first_lone_surrogate(value: Any) -> str | None:
    """The path of the first key or string holding a lone surrogate ("messages[0].content")."""
    pending: list[tuple[str, Any]] = [("", value)]
    while pending:
        path, item = pending.pop()
        if isinstance(item, str):
            if has_lone_surrogate(item):
                return path or "body"
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                if has_lone_surrogate(key):
                    return f"{path}.{key!r}" if path else repr(key)
                pending.append((f"{path}.{key}" if path else key, child))
        elif isinstance(item, list):
            pending.extend((f"{path}[{index}]", child) for index, child in reversed(list(enumerate(item))))
    return None


def parse_json(raw: bytes | str, *, what: str = "The request body") -> Any:
    """Read untrusted JSON: UTF-8, at most MAX_JSON_DEPTH deep, no NaN or Infinity, no lone
    surrogates. Anything else is an ApplicationError (400) that says what is wrong, never a 500."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ApplicationError(f"{what} is not valid JSON: it is not UTF-8.", code="invalid_json") from None
    if _nesting_depth(raw) > MAX_JSON_DEPTH:
        raise ApplicationError(
            f"{what} nests too deeply: at most {MAX_JSON_DEPTH} levels of arrays and objects.", code="invalid_json"
        )
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:  # the depth check should make this unreachable; never a 500 if not
        raise ApplicationError(f"{what} nests too deeply.", code="invalid_json") from None
    except ValueError as error:
        raise ApplicationError(f"{what} is not valid JSON ({error}).", code="invalid_json") from None
    if _SURROGATE_ESCAPE.search(raw):
        path = _first_lone_surrogate(value)
        if path is not None:
            raise ApplicationError(
                f"{path} contains invalid Unicode (a lone surrogate); send text as UTF-8.",
                code="invalid_unicode",
                param=path,
            )
    return value


def body_too_large() -> ApplicationError:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return ApplicationError(
        f"The request body is larger than {limit:,} bytes.", code="request_too_large", status_code=413
    )


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser with parse_json's limits."""

    def parse(self, stream, media_type=None, parser_context=None):
        return parse_json(stream.read())


def _validation_message(detail, path: tuple = ()) -> tuple[str | None, str]:
    """The first error in DRF's nested detail, with the dotted path to the field it is about."""
    if isinstance(detail, dict):
        for field, value in detail.items():
            if value:
                return _validation_message(value, (*path, str(field)))
    if isinstance(detail, list):
        strings = [item for item in detail if not isinstance(item, dict | list)]
        if strings:
            return (".".join(path) or None), str(strings[0])
        for index, item in enumerate(detail):
            if item:
                return _validation_message(item, (*path, str(index)))
    return (".".join(path) or None), str(detail)


def exception_handler(exc, context):
    """Every API error in one envelope: {"error": {"message", "type", "param", "code"}}."""
    if isinstance(exc, RequestDataTooBig):  # Django's DATA_UPLOAD_MAX_MEMORY_SIZE, met reading the body
        exc = body_too_large()
    if isinstance(exc, ApplicationError):
        return Response({"error": exc.as_dict()}, status=exc.status_code)
    if isinstance(exc, Http404 | exceptions.NotFound):
        return Response(error_body("Not found.", type="not_found_error", code="not_found"), status=404)
    if isinstance(exc, exceptions.ValidationError):
        param, message = _validation_message(exc.detail)
        text = f"{param}: {message}" if param and param != "non_field_errors" else message
        return Response(error_body(text, type="invalid_request_error", code="invalid_request", param=param), status=400)
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        body = error_body(
            "Send your API key as 'Authorization: Bearer ink_...'.", type="authentication_error", code="invalid_api_key"
        )
        return Response(body, status=401, headers={"WWW-Authenticate": 'Bearer realm="inkwell"'})
    if isinstance(exc, exceptions.PermissionDenied):
        return Response(error_body(str(exc.detail), type="permission_error", code="permission_denied"), status=403)
    if isinstance(exc, exceptions.Throttled):
        return Response(error_body(str(exc.detail), type="rate_limit_error", code="rate_limit_exceeded"), status=429)
    if isinstance(exc, exceptions.APIException):
        return Response(
            error_body(str(exc.detail), type="invalid_request_error", code=exc.default_code), status=exc.status_code
        )
    logger.exception("API error", exc_info=exc)
    return Response(
        error_body("Something went wrong on our side.", type="server_error", code="server_error"), status=500
    )
