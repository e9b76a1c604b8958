"""An engine without a model (``INFERENCE_ENGINE=noop``): it measures the queue, not the model."""

from __future__ import annotations

from inference.engine.types import FinishReason, GenerationRequest, GenerationResult


class NoopEngine:
    """Answers every request at once with no text: measures the queue without the model."""

    alive: bool = True  # nothing runs in the background that could die
    failure: str | None = None

    def submit(self, request: GenerationRequest) -> GenerationRequest:
        request.result = GenerationResult(
            text="", prompt_tokens=len(request.prompt_ids), completion_tokens=0, finish_reason=FinishReason.STOP
        )
        request.done.set()
        return request

    def cancel(self, request_id: str, reason: FinishReason = FinishReason.CANCELLED) -> bool:
        return False

    def stop(self) -> None:
        pass
