"""The engine's vocabulary: what a request asks for and what it gets back, the error it raises,
and what any engine offers its caller (``EngineProtocol``). No Django here, and no torch."""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

# Below this temperature a row decodes greedily. Dividing logits by a temperature near zero
# overflows them to inf, and the softmax of inf is NaN: sampling would fail (and used to fail the
# whole batch). 0.01 already makes a 1-logit lead a 100-logit lead, so greedy is what such a
# temperature means anyway. The web boundary uses the same value.
MIN_TEMPERATURE = 0.01


class FinishReason(enum.StrEnum):
    LENGTH = "length"  # max_new_tokens reached
    STOP = "stop"  # end-of-sequence token or a stop sequence
    CANCELLED = "cancelled"
    ERROR = "error"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class SamplingParams:
    """How one request chooses its tokens.

    ``temperature`` below ``MIN_TEMPERATURE`` (0.01; 0 included, NaN too) means greedy: the row
    takes the most likely token, exactly as ``generate(do_sample=False)`` would.
    """

    max_new_tokens: int = 128
    temperature: float = 1.0  # below MIN_TEMPERATURE means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 means no top-k filter
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False  # run to max_new_tokens even past end-of-sequence (benchmarks)

    @property
    def greedy(self) -> bool:
        # Written as "not >=" so that a NaN temperature is greedy too, not a division by NaN.
        return not self.temperature >= MIN_TEMPERATURE


@dataclass
class GenerationResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    error: str = ""  # why a request ended with FinishReason.ERROR, in words for its user
    # Every token chosen, the end-of-sequence token that ended it included (as generate returns
    # it), so len(token_ids) == completion_tokens.
    token_ids: list[int] = field(default_factory=list)
    time_to_first_token: float | None = None  # seconds from submission to the first token
    generation_seconds: float = 0.0


@dataclass
class GenerationRequest:
    """One prompt in the engine. ``on_text`` receives each new piece of text as it is produced."""

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    on_text: Callable[[str], None] | None = None
    cancel_reason: FinishReason | None = None
    done: threading.Event = field(default_factory=threading.Event)
    result: GenerationResult | None = None
    submitted_at: float = 0.0  # perf_counter() when the engine accepted it

    def cancel(self, reason: FinishReason = FinishReason.CANCELLED) -> None:
        """Ask the engine to stop this request at the next token boundary; text so far is kept."""
        if self.cancel_reason is None:
            self.cancel_reason = reason

    def wait(self, timeout: float | None = None) -> GenerationResult | None:
        self.done.wait(timeout)
        return self.result


class EngineError(ValueError):
    """A request the engine cannot run as asked (the message says what to change), or an engine
    that no longer takes requests."""


class EngineProtocol(Protocol):
    """What the worker's executor needs of an engine: the continuous-batching ``Engine`` and the
    ``NoopEngine`` both offer it."""

    def submit(self, request: GenerationRequest) -> GenerationRequest:
        """Take the request in (``EngineError`` if it cannot run); it ends by setting
        ``request.result`` and ``request.done``."""
        ...

    def cancel(self, request_id: str, reason: FinishReason = FinishReason.CANCELLED) -> bool:
        """Stop a request at the next token boundary. True if the engine holds it."""
        ...

    def stop(self) -> None:
        """End every request held and take no more."""
        ...

    @property
    def alive(self) -> bool:
        """False once the engine can run nothing more (its worker must be replaced)."""
        ...

    @property
    def failure(self) -> str | None:
        """Why the engine died; None while it lives."""
        ...
