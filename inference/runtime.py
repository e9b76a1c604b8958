"""The worker side of generation: one engine per model per worker process, and the adapter that
runs a claimed job on it (Invariant 5: the engine knows nothing of Django; this module does)."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time

from django.conf import settings
from django.db import close_old_connections

from inference import catalog, streams
from inference.models import FinishReason, GenerationJob

logger = logging.getLogger(__name__)

_engines: dict = {}
_lock = threading.Lock()
CANCEL_POLL_SECONDS = 2.0  # the database fallback, for a cancel whose Redis message was lost
FLUSH_SECONDS = 0.05  # streamed text is published in pieces at most this often


def configure_torch() -> None:
    import torch

    threads = settings.TORCH_THREADS or os.cpu_count() or 1
    torch.set_num_threads(threads)


class NoopEngine:
    """Answers every request at once with no text: measures the queue without the model."""

    def submit(self, request):
        from inference.engine.types import FinishReason, GenerationResult

        request.result = GenerationResult(
            text="", prompt_tokens=len(request.prompt_ids), completion_tokens=0, finish_reason=FinishReason.STOP
        )
        request.done.set()
        return request

    def cancel(self, request_id: str, reason=None) -> bool:
        return False

    def stop(self) -> None:
        pass


def engine_for(name: str):
    """This process's engine for model ``name``, loaded on first use and kept."""
    from inference.engine.registry import ModelSpec, load_model
    from inference.engine.scheduler import Engine

    with _lock:
        engine = _engines.get(name)
        if engine is None and settings.INFERENCE_ENGINE == "noop":
            engine = _engines[name] = NoopEngine()
        if engine is None:
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


def execute(job: GenerationJob):
    """Run a claimed job to its end; stream its text; return the outcome for ``job_finish``."""
    from inference.engine.scheduler import EngineError
    from inference.engine.types import GenerationRequest, SamplingParams
    from inference.services import JobOutcome

    started = time.monotonic()
    streams.publish_start(job.id, attempt=job.attempts)
    engine = engine_for(job.model)
    prompt_ids = catalog.prompt_token_ids(job.model, prompt=job.prompt or None, messages=job.messages)
    pieces: queue.SimpleQueue[str] = queue.SimpleQueue()
    request = GenerationRequest(
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
    try:
        engine.submit(request)
    except EngineError as exc:
        return JobOutcome(text="", completion_tokens=0, finish_reason=FinishReason.ERROR, error=str(exc))
    deadline = started + settings.JOB_SOFT_TIME_LIMIT
    next_poll = started + CANCEL_POLL_SECONDS
    while not request.done.wait(FLUSH_SECONDS):
        _flush(job.id, pieces)
        now = time.monotonic()
        if now > deadline:
            request.cancel(FinishReason.TIMEOUT)
        elif now > next_poll:
            next_poll = now + CANCEL_POLL_SECONDS
            if _cancel_requested(job.id):
                request.cancel(FinishReason.CANCELLED)
    _flush(job.id, pieces)
    result = request.result
    error = result.error
    if result.finish_reason == FinishReason.TIMEOUT:
        error = (
            f"The job reached the time limit of {settings.JOB_SOFT_TIME_LIMIT} s. The text so far is kept; "
            "your quota was not charged."
        )
    elif result.finish_reason == FinishReason.ERROR:
        error = "The model failed while generating. Your quota was not charged; please try again."
    return JobOutcome(
        text=result.text,
        completion_tokens=result.completion_tokens,
        finish_reason=result.finish_reason.value,
        error=error,
        run_seconds=time.monotonic() - started,
    )


def _flush(job_id, pieces: queue.SimpleQueue) -> None:
    text = []
    while True:
        try:
            text.append(pieces.get_nowait())
        except queue.Empty:
            break
    if text:
        try:
            streams.publish_delta(job_id, "".join(text))
        except Exception:  # the stream is a convenience; the database keeps the full text
            logger.warning("could not publish text for %s", job_id, exc_info=True)
