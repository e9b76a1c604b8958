"""The API's shared parts: one error envelope (OpenAI's shape) and the headers every response carries."""

from __future__ import annotations

import logging

from django.http import Http404, JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response

from saas.errors import ApplicationError

logger = logging.getLogger(__name__)


def error_body(message: str, *, type: str, code: str, param: str | None = None, **extra) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code, **extra}}


def error_response(error: ApplicationError) -> JsonResponse:
    return JsonResponse({"error": error.as_dict()}, status=error.status_code)


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
