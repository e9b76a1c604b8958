"""The OpenAI-compatible surface under /v1/: completions, chat completions (streaming too) and
models, so the official clients work unchanged. Every request is a job like any other (same
job_submit, same quota, listed in the dashboard). Async views: a request that waits for its text
holds no thread and no database connection while the worker generates."""

from __future__ import annotations

import time

from asgiref.sync import sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from accounts.authentication import KeyScopeAllows, key_from_header, refuse_key_in_url
from accounts.models import ApiKeyScope
from billing.permissions import api_member
from core.api import body_too_large, error_body, parse_json
from core.errors import ApplicationError
from inference import catalog
from inference.api import api_headers
from inference.live import (
    KEEPALIVE_COMMENT,
    StreamSlot,
    event_stream_response,
    final_job,
    follow_job,
    holding,
    job_events,
    release_database,
    sse_data,
    too_many_streams,
)
from inference.models import GenerationJob, JobSource, JobStatus
from inference.selectors import job_of_async
from inference.services import job_submit

COMMON_FIELDS = {"model", "max_tokens", "temperature", "top_p", "stop", "seed", "stream", "stream_options", "n", "user"}
# Inkwell's own sampling controls, accepted as extensions.
EXTENSION_FIELDS = {"top_k", "repetition_penalty"}
# Fields OpenAI defines that Inkwell accepts only at their neutral value.
NEUTRAL = {"presence_penalty": 0, "frequency_penalty": 0, "logprobs": None, "echo": False, "best_of": 1,
           "logit_bias": None, "suffix": None, "top_logprobs": None, "tools": None, "tool_choice": None,
           "response_format": None, "parallel_tool_calls": None}  # fmt: skip
COMPLETION_FIELDS = COMMON_FIELDS | EXTENSION_FIELDS | {"prompt"}
CHAT_FIELDS = COMMON_FIELDS | EXTENSION_FIELDS | {"messages", "max_completion_tokens"}


def _error(status: int, message: str, *, type: str = "invalid_request_error", code: str = "invalid_request",
           param: str | None = None) -> JsonResponse:  # fmt: skip
    return JsonResponse(error_body(message, type=type, code=code, param=param), status=status)


def _application_error(error: ApplicationError) -> JsonResponse:
    return JsonResponse({"error": error.as_dict()}, status=error.status_code)


async def _authenticate(request, *, write: bool = False):
    try:
        refuse_key_in_url(request.GET)
        raw = key_from_header(request.headers.get("Authorization", ""))
        if raw is None:
            return None, _error(401, "Send your API key as 'Authorization: Bearer ink_...'.",
                                type="authentication_error", code="invalid_api_key")  # fmt: skip
        member, key = await sync_to_async(api_member)(raw)
    except ApplicationError as error:
        return None, _application_error(error)
    if write and key.scope != ApiKeyScope.WRITE:
        return None, _error(403, KeyScopeAllows.message, type="permission_error", code="permission_denied")
    return member, None


async def _with_headers(response, member):
    headers = await sync_to_async(api_headers)(member)
    await release_database()
    for name, value in headers.items():
        response[name] = value
    return response


def _parse(request, allowed: set[str]) -> dict:
    try:
        raw = request.body
    except RequestDataTooBig:
        raise body_too_large() from None
    body = parse_json(raw or b"{}")
    if not isinstance(body, dict):
        raise ApplicationError("The request body must be a JSON object.")
    for field, value in body.items():
        if field in allowed:
            continue
        if field in NEUTRAL and value == NEUTRAL[field]:
            continue
        raise ApplicationError(f"{field!r} is not supported by Inkwell.", param=field, code="unsupported_parameter")
    if body.get("n", 1) != 1:
        raise ApplicationError("Only n=1 is supported.", param="n", code="unsupported_parameter")
    if not isinstance(body.get("stream_options") or {}, dict):
        raise ApplicationError("stream_options must be an object.", param="stream_options")
    if "model" not in body:
        raise ApplicationError("model is required.", param="model")
    if not isinstance(body["model"], str):
        raise ApplicationError("model must be a string: the name of one of your plan's models.", param="model")
    if not isinstance(body.get("stream", False), bool | None):
        raise ApplicationError("stream must be true or false.", param="stream")
    return body


def _as_sent(error: ApplicationError, field: str) -> ApplicationError:
    """job_submit's error about max_new_tokens, told in the name this client sent it as."""
    if error.param == "max_new_tokens" and field != "max_new_tokens":
        error.message = error.message.replace("max_new_tokens", field)
        error.param = field
    return error


def _sampling(body: dict, max_tokens_field: str = "max_tokens") -> dict:
    params = {
        "model": body["model"],
        "max_new_tokens": body.get(max_tokens_field, body.get("max_tokens")),
        "temperature": body.get("temperature", 1.0),
        "top_p": body.get("top_p", 1.0),
        "top_k": body.get("top_k", 0),
        "repetition_penalty": body.get("repetition_penalty", 1.0),
        "stop": body.get("stop"),
        "seed": body.get("seed"),
    }
    return {k: v for k, v in params.items() if v is not None}


def _finish_reason(job: GenerationJob) -> str:
    return "length" if job.finish_reason == "length" else "stop"


def _usage(job: GenerationJob) -> dict:
    return {
        "prompt_tokens": job.prompt_tokens,
        "completion_tokens": job.completion_tokens,
        "total_tokens": job.prompt_tokens + job.completion_tokens,
    }


def _failed(job: GenerationJob) -> JsonResponse:
    return _error(500, job.error_message or "The generation failed.", type="server_error", code="generation_failed")


async def _handle(request, *, chat: bool):
    member, failure = await _authenticate(request, write=True)
    if failure is not None:
        await release_database()
        return failure
    slot = None
    try:
        body = _parse(request, CHAT_FIELDS if chat else COMPLETION_FIELDS)
        tokens_field = "max_completion_tokens" if chat and "max_completion_tokens" in body else "max_tokens"
        params = _sampling(body, "max_completion_tokens" if chat else "max_tokens")
        if chat:
            params["messages"] = body.get("messages")
            if params["messages"] is None:
                raise ApplicationError("messages is required.", param="messages")
        else:
            prompt = body.get("prompt")
            if isinstance(prompt, list):
                if len(prompt) != 1 or not isinstance(prompt[0], str):
                    raise ApplicationError("Send one prompt string per request.", param="prompt")
                prompt = prompt[0]
            params["prompt"] = prompt if prompt is not None else ""
        if body.get("stream"):
            # Before the job: a stream refused for the cap leaves nothing queued behind it.
            slot = await StreamSlot.take(member.user_id)
            if slot is None:
                raise too_many_streams()
        try:
            job = await sync_to_async(job_submit)(
                member=member, source=JobSource.OPENAI, entitlements=member.request_entitlements, **params
            )
        except ApplicationError as error:
            raise _as_sent(error, tokens_field) from None
    except ApplicationError as error:
        if slot is not None:
            await slot.release()
        return await _with_headers(_application_error(error), member)
    created = int(time.time())
    stream_options = body.get("stream_options") or {}
    if slot is not None:
        chunks = _chunks(job, chat=chat, created=created, include_usage=bool(stream_options.get("include_usage")))
        return await _with_headers(event_stream_response(holding(slot, chunks)), member)
    await release_database()
    job = await final_job(job)
    if job.status == JobStatus.FAILED:
        return await _with_headers(_failed(job), member)
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": job.output_text},
                  "finish_reason": _finish_reason(job), "logprobs": None}  # fmt: skip
        obj, prefix = "chat.completion", "chatcmpl"
    else:
        choice = {"index": 0, "text": job.output_text, "finish_reason": _finish_reason(job), "logprobs": None}
        obj, prefix = "text_completion", "cmpl"
    payload = {"id": f"{prefix}-{job.pk}", "object": obj, "created": created, "model": job.model,
               "choices": [choice], "usage": _usage(job)}  # fmt: skip
    return await _with_headers(JsonResponse(payload), member)


async def _chunks(job: GenerationJob, *, chat: bool, created: int, include_usage: bool):
    obj, prefix = ("chat.completion.chunk", "chatcmpl") if chat else ("text_completion", "cmpl")
    base = {"id": f"{prefix}-{job.pk}", "object": obj, "created": created, "model": job.model}

    def chunk(text: str | None, finish: str | None, first: bool = False) -> str:
        if chat:
            delta = {"role": "assistant", "content": text or ""} if first else ({"content": text} if text else {})
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
        return sse_data({**base, "choices": [choice]})

    if chat:
        yield chunk(None, None, first=True)
    sent = ""
    async for kind, data in follow_job(job):
        if kind == "reset":
            # The worker died and the job started over: text already sent cannot be taken back.
            body = error_body("The generation was interrupted and restarted; retry the request.",
                              type="server_error", code="generation_restarted")  # fmt: skip
            yield sse_data(body)
            yield sse_data("[DONE]")
            return
        if kind in ("snapshot", "delta"):
            sent += data
            yield chunk(data, None)
        elif kind == "keepalive":
            yield KEEPALIVE_COMMENT
        elif kind == "end":
            if data.status == JobStatus.FAILED:
                body = error_body(data.error_message or "The generation failed.", type="server_error",
                                  code="generation_failed")  # fmt: skip
                yield sse_data(body)
            else:
                missing = data.output_text[len(sent) :] if data.output_text.startswith(sent) else ""
                if missing:
                    yield chunk(missing, None)
                yield chunk(None, _finish_reason(data))
                if include_usage:
                    yield sse_data({**base, "choices": [], "usage": _usage(data)})
            yield sse_data("[DONE]")
            return


@csrf_exempt
async def completions(request):
    if request.method != "POST":
        return _error(405, "Use POST.", code="method_not_allowed")
    return await _handle(request, chat=False)


@csrf_exempt
async def chat_completions(request):
    if request.method != "POST":
        return _error(405, "Use POST.", code="method_not_allowed")
    return await _handle(request, chat=True)


async def models(request):
    member, failure = await _authenticate(request)
    if failure is not None:
        await release_database()
        return failure
    names = catalog.runnable_models(member.request_entitlements)
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "inkwell"} for name in names]
    return await _with_headers(JsonResponse({"object": "list", "data": data}), member)


async def api_job_stream(request, job_id):
    """GET /api/v1/jobs/<id>/stream: the job's server-sent events, for API keys (404 for another
    user's job, 429 past MAX_STREAMS_PER_USER)."""
    member, failure = await _authenticate(request)
    if failure is not None:
        await release_database()
        return failure
    job = await job_of_async(member, job_id)
    await release_database()
    if job is None:
        return _error(404, "Not found.", type="not_found_error", code="not_found")
    slot = await StreamSlot.take(member.user_id)
    if slot is None:
        return _application_error(too_many_streams())
    return event_stream_response(holding(slot, job_events(job)))
