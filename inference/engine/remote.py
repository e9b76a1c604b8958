"""An engine that runs nothing itself: it streams each request from an OpenAI-compatible inference
server (vLLM, SGLang, TGI, llama.cpp's server, ``transformers serve``) through the completions
endpoint. No Django and no settings here: the executor passes the server's address and limits.

One asyncio loop thread per engine serves every request in flight, so a worker process holds as
many open streams as it has jobs. A request ends like any engine request: ``request.result`` and
``request.done``; the server's errors, timeouts and disconnects end it with ``FinishReason.ERROR``
and a message for its user, keeping the text already received.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import openai

from inference.engine.types import EngineError, FinishReason, GenerationRequest, GenerationResult

CANCEL_CHECK_SECONDS = 0.05  # how often a cancel asked on the request itself is noticed
_FINISH_REASONS = {"length": FinishReason.LENGTH, "stop": FinishReason.STOP}


@dataclass
class RemoteRequest(GenerationRequest):
    """A request for a server that takes the prompt as text (``prompt_ids`` still says how many
    tokens Inkwell counted, to compare with the server's usage)."""

    prompt_text: str = ""


@dataclass
class _Received:
    pieces: list[str]
    usage: openai.types.CompletionUsage | None = None
    finish_reason: str | None = None
    first_at: float | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)


class RemoteEngine:
    """The engine protocol over an OpenAI-compatible server's ``/completions`` stream.

    ``count_tokens`` counts the tokens of text received when the server did not report its usage
    (a stream cut short by a cancel or a failure); ``prompt_as_ids`` sends the prompt as token
    ids (vLLM, SGLang and llama.cpp take them; ``transformers serve`` and TGI take text only).
    """

    def __init__(
        self,
        *,
        base_url: str,
        served_model: str,
        count_tokens: Callable[[str], int],
        api_key: str = "",
        read_timeout: float = 60.0,
        connect_timeout: float = 5.0,
        prompt_as_ids: bool = False,
    ) -> None:
        self.base_url = base_url
        self.served_model = served_model
        self._count_tokens = count_tokens
        self._prompt_as_ids = prompt_as_ids
        self._read_timeout = read_timeout
        # The key is sent as a bearer token; servers without keys ignore it, but the client needs one.
        self._client_args = {
            "base_url": base_url,
            "api_key": api_key or "none",
            "timeout": openai.Timeout(read_timeout, connect=connect_timeout),
            "max_retries": 0,  # a job fails clearly rather than waiting through hidden retries
        }
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"remote-{served_model}", daemon=True)
        self._running: dict[str, tuple[GenerationRequest, concurrent.futures.Future]] = {}
        self._lock = threading.Lock()
        self._stopped = False
        self._client: openai.AsyncOpenAI | None = None

    def start(self) -> RemoteEngine:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(timeout=30)
        return self

    async def _open(self) -> None:
        # Made on the loop it serves: the client's connection pool belongs to that loop.
        self._client = openai.AsyncOpenAI(**self._client_args)
        self._loop.create_task(self._watch_cancels())

    @property
    def alive(self) -> bool:
        # A server that is down fails its jobs, not the engine: the next job may find it back.
        return not self._stopped and self._thread.is_alive()

    @property
    def failure(self) -> str | None:
        if self.alive:
            return None
        return "stopped" if self._stopped else "the remote engine's loop thread ended"

    def submit(self, request: GenerationRequest) -> GenerationRequest:
        if not self.alive:
            raise EngineError("The model server connection is closed; this worker takes no more requests.")
        if not self._prompt_as_ids and not isinstance(request, RemoteRequest):
            raise EngineError("This model's server takes the prompt as text; the request has none.")
        request.submitted_at = time.perf_counter()
        with self._lock:
            if request.request_id in self._running:
                raise EngineError(f"Request {request.request_id} is already running.")
            future = asyncio.run_coroutine_threadsafe(self._run(request), self._loop)
            self._running[request.request_id] = (request, future)
        future.add_done_callback(lambda _: self._forget(request.request_id))
        return request

    def cancel(self, request_id: str, reason: FinishReason = FinishReason.CANCELLED) -> bool:
        with self._lock:
            held = self._running.get(request_id)
        if held is None:
            return False
        request, future = held
        request.cancel(reason)
        # Cancelling the task closes its stream; the server sees the disconnect and stops.
        future.cancel()
        return True

    def stop(self) -> None:
        self._stopped = True
        with self._lock:
            held = list(self._running.values())
        for request, future in held:
            request.cancel(FinishReason.CANCELLED)
            future.cancel()
        for _request, future in held:
            with contextlib.suppress(concurrent.futures.CancelledError, concurrent.futures.TimeoutError):
                future.result(timeout=5)
        if self._thread.is_alive():
            if self._client is not None:
                asyncio.run_coroutine_threadsafe(self._client.close(), self._loop).result(timeout=5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    def _forget(self, request_id: str) -> None:
        with self._lock:
            self._running.pop(request_id, None)

    async def _watch_cancels(self) -> None:
        """The executor may cancel through the request alone (its soft time limit, a cancel read
        from the database): notice it even while the server sends nothing."""
        while True:
            await asyncio.sleep(CANCEL_CHECK_SECONDS)
            with self._lock:
                held = list(self._running.values())
            for request, future in held:
                if request.cancel_reason is not None and not future.done():
                    future.cancel()

    async def _run(self, request: GenerationRequest) -> None:
        received = _Received(pieces=[])
        finish, error = FinishReason.ERROR, ""
        try:
            await self._stream(request, received)
            finish, error = self._ending(request, received)
        except asyncio.CancelledError:
            finish = request.cancel_reason or FinishReason.CANCELLED
        except openai.APITimeoutError:
            error = f"the model server sent nothing for {self._read_timeout:g} s"
        except openai.APIConnectionError:
            error = "the model server could not be reached or closed the connection"
        except openai.APIStatusError as exc:
            error = f"the model server answered {exc.status_code}: {_short(_said(exc))}"
        except openai.APIError as exc:
            error = f"the model server reported an error: {_short(exc.message)}"
        finally:
            request.result = self._result(request, received, finish, error)
            request.done.set()

    async def _stream(self, request: GenerationRequest, received: _Received) -> None:
        assert self._client is not None  # set by start()
        stream = await self._client.completions.create(
            model=self.served_model,
            prompt=self._prompt(request),
            max_tokens=request.params.max_new_tokens,
            stream=True,
            stream_options={"include_usage": True},
            **_sampling_fields(request),
        )
        async with stream:  # leaving it closes the connection, also on cancel
            async for chunk in stream:
                if chunk.usage is not None:
                    received.usage = chunk.usage
                for choice in chunk.choices:
                    if choice.text:
                        received.first_at = received.first_at or time.perf_counter()
                        received.pieces.append(choice.text)
                        if request.on_text is not None:
                            request.on_text(choice.text)
                    if choice.finish_reason:
                        received.finish_reason = choice.finish_reason

    def _prompt(self, request: GenerationRequest) -> str | list[int]:
        if self._prompt_as_ids:
            return list(request.prompt_ids)
        return request.prompt_text  # submit() checked that it is a RemoteRequest

    @staticmethod
    def _ending(request: GenerationRequest, received: _Received) -> tuple[FinishReason, str]:
        if received.finish_reason is None:
            return FinishReason.ERROR, "the model server ended the stream before the text was complete"
        return _FINISH_REASONS.get(received.finish_reason, FinishReason.STOP), ""

    def _result(
        self, request: GenerationRequest, received: _Received, finish: FinishReason, error: str
    ) -> GenerationResult:
        usage = received.usage
        if usage is not None:
            prompt_tokens, completion_tokens = usage.prompt_tokens, usage.completion_tokens
        else:
            prompt_tokens, completion_tokens = len(request.prompt_ids), self._counted(received.text)
        if received.text and completion_tokens == 0:
            completion_tokens = 1  # text the user received is never free
        ttft = None if received.first_at is None else received.first_at - request.submitted_at
        return GenerationResult(
            text=received.text,
            prompt_tokens=prompt_tokens,
            completion_tokens=min(completion_tokens, request.params.max_new_tokens),
            finish_reason=finish,
            error=error,
            time_to_first_token=ttft,
            generation_seconds=time.perf_counter() - request.submitted_at,
        )

    def _counted(self, text: str) -> int:
        return self._count_tokens(text) if text else 0


def _sampling_fields(request: GenerationRequest) -> dict:
    """The request's sampling in the completions API. Fields left at their neutral value are not
    sent: some servers refuse fields they do not know (``transformers serve`` answers 422)."""
    params = request.params
    fields: dict = {"temperature": 0.0 if params.greedy else params.temperature}
    if params.top_p < 1.0:
        fields["top_p"] = params.top_p
    if params.stop:
        fields["stop"] = list(params.stop)
    if params.seed is not None:
        fields["seed"] = params.seed
    extra = {}
    if params.top_k:
        extra["top_k"] = params.top_k
    if params.repetition_penalty != 1.0:
        extra["repetition_penalty"] = params.repetition_penalty
    if params.ignore_eos:
        extra["ignore_eos"] = True
    if extra:
        fields["extra_body"] = extra  # vLLM's and SGLang's names for these
    return fields


def _said(exc: openai.APIStatusError) -> str:
    """What the server said: OpenAI's error object, or FastAPI's ``detail`` (transformers serve)."""
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        said = error.get("message") if isinstance(error, dict) else error
        said = said or body.get("detail") or body.get("message")
        if said:
            return str(said)
    return exc.message


def _short(message: str, limit: int = 200) -> str:
    return message if len(message) <= limit else message[: limit - 1] + "…"
