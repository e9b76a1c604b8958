"""The one module between Celery and the engine: one engine per model per worker process (loaded
once, cancelled, stopped), and the adapter that runs a claimed job on it (Invariant 5: the engine
knows nothing of Django; this module does). Web processes import it too (through worker.py), so
nothing here imports torch before a model is loaded."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time

from django.conf import settings
from django.db import close_old_connections

from inference import catalog, streams
from inference.engine import (
    EngineError,
    EngineProtocol,
    GenerationRequest,
    NoopEngine,
    RemoteEngine,
    RemoteRequest,
    SamplingParams,
)
from inference.models import FinishReason, GenerationJob
from inference.outcome import JobOutcome

logger = logging.getLogger(__name__)

_engines: dict[str, EngineProtocol] = {}
_lock = threading.Lock()
CANCEL_POLL_SECONDS = 2.0  # the database fallback, for a cancel whose Redis message was lost
FLUSH_SECONDS = 0.05  # streamed text is published in pieces at most this often


def configure_torch() -> None:
    import torch  # here, not at module top: web processes import this module and never need torch

    threads = settings.TORCH_THREADS or os.cpu_count() or 1
    torch.set_num_threads(threads)


def engine_for(name: str) -> EngineProtocol:
    """This process's engine for model ``name``, loaded on first use and kept."""
    with _lock:
        engine = _engines.get(name)
        if engine is None and settings.INFERENCE_ENGINE == "noop":
            engine = _engines[name] = NoopEngine()
        if engine is None and name in settings.INFERENCE_REMOTE:
            engine = _engines[name] = _remote_engine(name)
        if engine is None:
            # The scheduler and the loader import torch: only a worker that runs a model here gets this far.
            from inference.engine import Engine, ModelSpec, load_model

            spec = ModelSpec(
                name=name,
                source=settings.INFERENCE_MODELS[name],
                dtype=settings.INFERENCE_DTYPE,
                device=settings.INFERENCE_DEVICE,
            )
            engine = Engine(
                load_model(spec),
                max_batch=settings.ENGINE_MAX_BATCH,
                prefill_tokens_per_step=settings.ENGINE_PREFILL_TOKENS,
            ).start()
            _engines[name] = engine
        return engine


def _remote_engine(name: str) -> EngineProtocol:
    """The engine of a model that an OpenAI-compatible server runs (INFERENCE_REMOTE)."""
    server = settings.INFERENCE_REMOTE[name]
    return RemoteEngine(
        base_url=server["url"],
        served_model=server["model"],
        api_key=server["api_key"],
        read_timeout=server["read_timeout"],
        connect_timeout=server["connect_timeout"],
        prompt_as_ids=server["prompt_as_ids"],
        count_tokens=lambda text: catalog.text_token_count(name, text),
    ).start()


def preload() -> None:
    for name in catalog.model_names():
        if catalog.local_model_missing(name):
            logger.warning("model %s: %s has no model yet; skipped", name, settings.INFERENCE_MODELS[name])
            continue
        try:
            engine_for(name)
        except Exception:
            logger.exception("could not load model %s", name)


def cancel(job_id: str) -> None:
    for engine in list(_engines.values()):
        engine.cancel(job_id)


def shutdown() -> None:
    with _lock:
        for engine in _engines.values():
            engine.stop()
        _engines.clear()


def _cancel_requested(job_id) -> bool:
    try:
        return GenerationJob.objects.filter(pk=job_id, cancel_requested_at__isnull=False).exists()
    finally:
        close_old_connections()


def engines_failed() -> dict[str, str]:
    """The engines of this process whose scheduler thread died, with why: such a worker can run
    nothing more and must stop (a supervisor starts a fresh one)."""
    with _lock:
        return {name: engine.failure or "stopped" for name, engine in _engines.items() if not engine.alive}


def sanitize(text: str) -> str:
    """Text fit to store and stream: PostgreSQL refuses NUL in text, so a model that emits one
    gets U+FFFD (the replacement character) in its place."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _delivered_tokens(job: GenerationJob, text: str) -> int:
    """Tokens in text already delivered, for a job whose engine never said how many it made."""
    if not text:
        return 0
    tokens = catalog.text_token_count(job.model, text)
    return min(max(tokens, 1), job.max_new_tokens)


def _ended_message(job: GenerationJob, what: str, charged_tokens: int) -> str:
    if charged_tokens:
        return f"{what} The text so far is kept and charged, like every token you received."
    return f"{what} Nothing was delivered, so your quota was not charged; please try again."


def execute(job: GenerationJob) -> JobOutcome:
    """Run a claimed job to its end; stream its text; return the outcome for ``job_finish``.

    Returns by JOB_HARD_TIME_LIMIT whatever the engine does (a stuck or dead engine included),
    so the Celery thread is always freed: Celery's own time limits do not apply to the threads
    pool."""
    started = time.monotonic()
    try:
        streams.publish_start(job.id, attempt=job.attempts)
    except Exception:  # Redis is away: the job still runs; streams fall back to the database
        logger.warning("could not publish the start of %s", job.id, exc_info=True)
    engine = engine_for(job.model)
    prompt_ids = catalog.prompt_token_ids(job.model, prompt=job.prompt or None, messages=job.messages)
    pieces: queue.SimpleQueue[str] = queue.SimpleQueue()
    delivered: list[str] = []
    request = _request_class(engine)(
        request_id=str(job.id),
        prompt_ids=prompt_ids,
        params=SamplingParams(
            max_new_tokens=job.max_new_tokens,
            temperature=job.temperature,
            top_p=job.top_p,
            top_k=job.top_k,
            repetition_penalty=job.repetition_penalty,
            stop=tuple(job.stop),
            seed=job.seed,
        ),
        on_text=pieces.put,
    )
    if isinstance(request, RemoteRequest):
        request.prompt_text = _prompt_text(job)
    try:
        engine.submit(request)
    except EngineError as exc:
        return JobOutcome(text="", completion_tokens=0, finish_reason=FinishReason.ERROR, error=str(exc))
    soft_deadline = started + settings.JOB_SOFT_TIME_LIMIT
    hard_deadline = started + settings.JOB_HARD_TIME_LIMIT
    next_poll = started + CANCEL_POLL_SECONDS
    abandoned = ""
    while not request.done.wait(FLUSH_SECONDS):
        _flush(job, pieces, delivered)
        now = time.monotonic()
        if now > hard_deadline:
            abandoned = FinishReason.TIMEOUT
        elif not engine.alive:
            abandoned = FinishReason.ERROR
        if abandoned:
            engine.cancel(str(job.id), abandoned)
            break
        if now > soft_deadline:
            request.cancel(FinishReason.TIMEOUT)
        elif now > next_poll:
            next_poll = now + CANCEL_POLL_SECONDS
            if _cancel_requested(job.id):
                request.cancel(FinishReason.CANCELLED)
    _flush(job, pieces, delivered)
    run_seconds = time.monotonic() - started
    if abandoned:
        # The engine did not answer in time (or died): end the job with what was delivered.
        text = "".join(delivered)
        tokens = _delivered_tokens(job, text)
        what = (
            f"The job reached the hard time limit of {settings.JOB_HARD_TIME_LIMIT} s."
            if abandoned == FinishReason.TIMEOUT
            else "The model server stopped while generating."
        )
        return JobOutcome(
            text=text,
            completion_tokens=tokens,
            finish_reason=abandoned,
            error=_ended_message(job, what, tokens),
            run_seconds=run_seconds,
        )
    result = request.result
    error = result.error
    if result.finish_reason == FinishReason.TIMEOUT:
        error = _ended_message(
            job, f"The job reached the time limit of {settings.JOB_SOFT_TIME_LIMIT} s.", result.completion_tokens
        )
    elif result.finish_reason == FinishReason.ERROR:
        what = f"The model failed while generating ({result.error})." if result.error else "The model failed."
        error = _ended_message(job, what, result.completion_tokens)
    return JobOutcome(
        text=sanitize(result.text),
        completion_tokens=result.completion_tokens,
        finish_reason=result.finish_reason.value,
        error=error,
        run_seconds=run_seconds,
        extra=_prompt_count_difference(job, result.prompt_tokens),
    )


def _request_class(engine: EngineProtocol) -> type[GenerationRequest]:
    return RemoteRequest if isinstance(engine, RemoteEngine) else GenerationRequest


def _prompt_text(job: GenerationJob) -> str:
    """The prompt as text for a server that tokenises it itself. A chat job goes through the
    model's chat template here, as for the local engine, so the server runs the prompt Inkwell
    counted and reserved quota for."""
    if job.messages is None:
        return job.prompt or ""
    return catalog.tokenizer_for(job.model).apply_chat_template(
        job.messages, add_generation_prompt=True, tokenize=False
    )


def _prompt_count_difference(job: GenerationJob, engine_prompt_tokens: int) -> dict:
    """The job is charged the prompt Inkwell counted at submit (what the user was shown and quota
    was reserved for); a server that counted otherwise (another tokenizer, a second BOS token)
    is recorded here and logged, for the operator to look into."""
    if engine_prompt_tokens == job.prompt_tokens:
        return {}
    logger.warning(
        "job %s: the engine counted %d prompt tokens, Inkwell %d", job.id, engine_prompt_tokens, job.prompt_tokens
    )
    return {"engine_prompt_tokens": engine_prompt_tokens}


def _flush(job: GenerationJob, pieces: queue.SimpleQueue, delivered: list[str]) -> None:
    text = []
    while True:
        try:
            text.append(pieces.get_nowait())
        except queue.Empty:
            break
    if text:
        chunk = sanitize("".join(text))
        delivered.append(chunk)
        try:
            streams.publish_delta(job, chunk)
        except Exception:  # the stream is a convenience; the database keeps the full text
            logger.warning("could not publish text for %s", job.id, exc_info=True)
