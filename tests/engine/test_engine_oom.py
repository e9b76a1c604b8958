"""The engine under CUDA out of memory, faked on the CPU: a forward pass bigger than a threshold
raises ``torch.OutOfMemoryError``. The engine shrinks its batch and its packed prefills and runs
the step again in halves, so every request still writes exactly what it writes without the
fault; the caps grow back after clean steps; a row that runs out of memory even alone fails alone."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import Qwen3Config

from inference.engine import Engine, FinishReason, LoadedModel, load_tokenizer
from tests.engine.test_engine_faults import (
    ODD_PROMPT,
    PROMPTS,
    fail_forward_on,
    greedy,
    results,
    submit_together,
    written_later,
)
from tests.engine.tiny_models import greedy_reference, tiny_model

MORE_PROMPTS = [
    "The train left the station late that night.",
    "She opened the old book and found a map.",
    "Bread, milk and eggs were on the list.",
]
NEW_TOKENS = 24


@pytest.fixture(scope="module")
def loaded(tiny_model_path) -> LoadedModel:
    tokenizer = load_tokenizer(str(tiny_model_path))
    return tiny_model("qwen3", Qwen3Config, tokenizer, max_context=1024, head_dim=16)


@pytest.fixture(scope="module")
def prompt_ids(loaded) -> list[list[int]]:
    return [loaded.tokenizer(p).input_ids for p in PROMPTS + MORE_PROMPTS]


@pytest.fixture(scope="module")
def expected(loaded, prompt_ids) -> list[list[int]]:
    return [greedy_reference(loaded, ids, NEW_TOKENS) for ids in prompt_ids]


class FakeMemory:
    """Patches the model's forward: a pass over more than ``max_rows`` rows (decoding) or more
    than ``max_tokens`` packed prompt tokens (prefill) raises out of memory, as a GPU too small
    for it would, while ``full`` is True. Counts the passes that ran out."""

    def __init__(self, monkeypatch, model: torch.nn.Module, *, max_rows: int, max_tokens: int) -> None:
        self.max_rows, self.max_tokens = max_rows, max_tokens
        self.full = True
        self.raised = 0
        self.engine: Engine | None = None
        self.caps: list[int] = []  # the engine's batch cap at each forward pass, once told the engine
        self._real_forward = model.forward
        monkeypatch.setattr(model, "forward", self.forward)

    def forward(self, *args, **kwargs):
        rows, tokens = kwargs["input_ids"].shape
        if self.engine is not None:
            self.caps.append(self.engine.batch_cap)
        if self.full and (rows > self.max_rows or tokens > self.max_tokens):
            self.raised += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self._real_forward(*args, **kwargs)


def test_out_of_memory_shrinks_the_batch_and_every_request_writes_what_it_writes_without_it(
    loaded, prompt_ids, expected, monkeypatch
) -> None:
    longest = max(len(ids) for ids in prompt_ids)
    memory = FakeMemory(monkeypatch, loaded.model, max_rows=2, max_tokens=longest + 4)
    engine = Engine(loaded, max_batch=8, oom_recovery_steps=10_000).start()
    try:
        got = results(submit_together(engine, [greedy(ids, NEW_TOKENS) for ids in prompt_ids]))
    finally:
        engine.stop()
    for result, want in zip(got, expected, strict=True):
        assert (result.finish_reason, result.error) == (FinishReason.LENGTH, "")
        assert result.token_ids == want
    assert engine.batch_cap == 2
    assert engine.prefill_budget < 1024
    # Shrunk once, not failing again at every step: 24 steps of 6 rows would have raised 24 times.
    assert 0 < memory.raised <= 8
    assert engine.out_of_memory_errors == memory.raised


def test_the_caps_grow_back_after_clean_steps(loaded, prompt_ids, expected, monkeypatch) -> None:
    memory = FakeMemory(monkeypatch, loaded.model, max_rows=3, max_tokens=10_000)
    engine = Engine(loaded, max_batch=8, oom_recovery_steps=4).start()
    memory.engine = engine
    try:
        got = results(submit_together(engine, [greedy(ids, NEW_TOKENS) for ids in prompt_ids]))
        memory.full = False  # the memory is back: a long request alone lets the caps grow back
        long = results([engine.submit(greedy(prompt_ids[0], 60))])[0]
    finally:
        engine.stop()
    caps = memory.caps
    lowest = caps.index(min(caps))
    assert min(caps) < 3
    # Up again while the fake memory was still short (then down at the next fault), one row at a time.
    assert any(later > min(caps) for later in caps[lowest:])
    assert all(b - a <= 1 for a, b in itertools.pairwise(caps))
    assert engine.batch_cap == 8
    assert engine.prefill_budget == 1024
    for result, want in zip(got, expected, strict=True):
        assert result.token_ids == want
    assert long.token_ids == greedy_reference(loaded, prompt_ids[0], 60)


def test_a_row_that_runs_out_of_memory_even_alone_fails_alone(loaded, prompt_ids, expected, monkeypatch) -> None:
    victim_ids, others = prompt_ids[0], prompt_ids[1:4]
    innocent = {t for ids in others + expected[1:4] for t in ids}
    at = written_later(victim_ids, expected[0], innocent)
    fail_forward_on(monkeypatch, loaded.model, expected[0][at], torch.OutOfMemoryError("CUDA out of memory"))
    engine = Engine(loaded, max_batch=8).start()
    try:
        victim, *rest = results(submit_together(engine, [greedy(ids, NEW_TOKENS) for ids in [victim_ids, *others]]))
    finally:
        engine.stop()
    assert victim.finish_reason == FinishReason.ERROR
    assert victim.error == "the model failed on this request (out of memory)"
    assert victim.token_ids == expected[0][: at + 1]
    for result, want in zip(rest, expected[1:4], strict=True):
        assert (result.finish_reason, result.error) == (FinishReason.LENGTH, "")
        assert result.token_ids == want


def test_a_prompt_that_runs_out_of_memory_even_alone_fails_alone(loaded, prompt_ids, expected, monkeypatch) -> None:
    odd_ids = loaded.tokenizer(ODD_PROMPT).input_ids
    FakeMemory(monkeypatch, loaded.model, max_rows=8, max_tokens=len(odd_ids) - 1)
    engine = Engine(loaded, max_batch=8).start()
    try:
        # The short prompts fit in the fake memory; the odd one alone does not.
        short = [ids[: len(odd_ids) - 1] for ids in prompt_ids[:2]]
        first, odd, second = results(submit_together(engine, [greedy(short[0]), greedy(odd_ids), greedy(short[1])]))
    finally:
        engine.stop()
    assert (odd.finish_reason, odd.error) == (FinishReason.ERROR, "the model failed on this request (out of memory)")
    assert (odd.completion_tokens, odd.text) == (0, "")
    for result, ids in zip([first, second], short, strict=True):
        assert result.error == ""
        assert result.token_ids == greedy_reference(loaded, ids, 30)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal shows only on a machine without CUDA")
def test_the_gpu_check_refuses_clearly_without_cuda() -> None:
    script = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.sh"
    run = subprocess.run(
        ["bash", str(script)], env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 2
    assert "no CUDA device" in run.stderr
    assert "engine tests" not in run.stdout
