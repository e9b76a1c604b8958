"""Greedy output equals ``generate`` token for token on the common decoder architectures, not only
on the GPT-2 demo model: tiny random Llama, Qwen2, Qwen3, Mistral and Gemma configs built here
(no download), at batch 1 and 8, with mixed prompt lengths and requests that join a batch that is
already decoding."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest
from transformers import (
    GemmaConfig,
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    Qwen2Config,
    Qwen3Config,
)

from inference.engine import (
    DEMO_CORPUS,
    Engine,
    FinishReason,
    GenerationRequest,
    LoadedModel,
    SamplingParams,
    load_tokenizer,
)
from tests.engine.tiny_models import greedy_reference, tiny_model

# What each architecture does differently from GPT-2 (learned positions, one fused attention
# projection) is what these cover: rotary positions, grouped key/value heads, and more.
ARCHITECTURES: dict[str, tuple[type[PretrainedConfig], dict]] = {
    "llama": (LlamaConfig, {}),
    # Biases on q, k and v; and no end-of-sequence id in its config, so only the tokenizer's ends it.
    "qwen2": (Qwen2Config, {}),
    "qwen3": (Qwen3Config, {"head_dim": 16}),  # RMS norm on queries and keys
    "mistral": (MistralConfig, {}),  # a sliding window (4096) longer than these sequences
    "gemma": (GemmaConfig, {"head_dim": 16}),  # embeddings scaled by sqrt(width), tied output layer
}
MAX_CONTEXT = 256
# Prompt lengths from 1 to 64 tokens and as many different lengths to write: rows come and go.
JOBS = [(1, 12), (38, 20), (9, 8), (64, 25), (3, 16), (30, 30), (17, 10), (52, 18)]


@dataclass
class Case:
    loaded: LoadedModel
    jobs: list[tuple[list[int], int]]
    expected: list[list[int]]


def build(name: str, tokenizer) -> LoadedModel:
    config_class, extra = ARCHITECTURES[name]
    return tiny_model(name, config_class, tokenizer, max_context=MAX_CONTEXT, **extra)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_path):
    return load_tokenizer(str(tiny_model_path))


@pytest.fixture(scope="module")
def corpus_ids(tokenizer) -> list[int]:
    return tokenizer(DEMO_CORPUS.read_text()).input_ids


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def case(request, tokenizer, corpus_ids) -> Case:
    loaded = build(request.param, tokenizer)
    jobs = [(corpus_ids[97 * i : 97 * i + length], new) for i, (length, new) in enumerate(JOBS)]
    return Case(loaded, jobs, [greedy_reference(loaded, ids, new) for ids, new in jobs])


def run_jobs(loaded: LoadedModel, jobs: list[tuple[list[int], int]], max_batch: int) -> list[GenerationRequest]:
    """Half the jobs at once; the other half once the first has written text (so they join a batch
    that is decoding). A small first cache makes the engine grow, shift and compact it."""
    first_text = threading.Event()
    engine = Engine(loaded, max_batch=max_batch, initial_capacity=16).start()
    try:
        requests = [
            GenerationRequest(str(i), ids, SamplingParams(max_new_tokens=new, temperature=0))
            for i, (ids, new) in enumerate(jobs)
        ]
        requests[0].on_text = lambda piece: first_text.set()
        half = len(requests) // 2
        for request in requests[:half]:
            engine.submit(request)
        first_text.wait(30)
        for request in requests[half:]:
            engine.submit(request)
        for request in requests:
            assert request.wait(60) is not None, f"request {request.request_id} never ended"
    finally:
        engine.stop()
    return requests


@pytest.mark.parametrize("max_batch", [1, 8])
def test_greedy_output_equals_generate_token_for_token(case: Case, max_batch: int) -> None:
    requests = run_jobs(case.loaded, case.jobs, max_batch)
    for request, want, (_, new) in zip(requests, case.expected, case.jobs, strict=True):
        result = request.result
        assert result.error == ""
        assert result.token_ids == want, f"request {request.request_id} ({len(request.prompt_ids)} prompt tokens)"
        assert result.completion_tokens == len(want)
        assert result.finish_reason == (FinishReason.LENGTH if len(want) == new else FinishReason.STOP)


def test_a_model_without_an_end_of_sequence_id_stops_at_its_tokenizers_and_reports_that_token(
    tokenizer, corpus_ids
) -> None:
    # The case reported as "Qwen2 diverges from generate": Qwen2Config has no eos_token_id, the
    # tokenizer has one. The engine stops there; generate does only when told the same id.
    loaded = build("qwen2", tokenizer)
    assert loaded.model.config.eos_token_id is None
    eos = tokenizer.eos_token_id
    prompts = [corpus_ids[start : start + 38] for start in range(0, len(corpus_ids) - 38, 11)]
    ending = next((ids for ids in prompts if greedy_reference(loaded, ids, 30)[-1:] == [eos]), None)
    assert ending is not None, "some prompt must make this model write end-of-sequence"
    want = greedy_reference(loaded, ending, 30)
    engine = Engine(loaded, max_batch=1).start()
    try:
        result = engine.submit(GenerationRequest("eos", ending, SamplingParams(max_new_tokens=30, temperature=0))).wait(
            30
        )
    finally:
        engine.stop()
    assert result.finish_reason == FinishReason.STOP
    assert result.token_ids == want
    assert result.completion_tokens == len(result.token_ids)
    assert result.text == tokenizer.decode(want, skip_special_tokens=True)
