"""How a job ended, as the worker reports it to ``job_finish``: its own module, so that the
executor (which produces it) and the services (which record it) need not import each other."""

from __future__ import annotations

from dataclasses import dataclass, field

from inference.models import FinishReason, JobStatus


@dataclass
class JobOutcome:
    text: str
    completion_tokens: int
    finish_reason: str
    error: str = ""
    run_seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        if self.finish_reason == FinishReason.CANCELLED:
            return JobStatus.CANCELLED
        if self.finish_reason in (FinishReason.ERROR, FinishReason.TIMEOUT):
            return JobStatus.FAILED
        return JobStatus.SUCCEEDED
