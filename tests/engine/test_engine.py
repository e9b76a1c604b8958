"""The engine alone (no Django, no database): batching must not change what a model writes."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from inference.engine import (
    Engine,
    EngineError,
    FinishReason,
    GenerationRequest,
    ModelSpec,
    SamplingParams,
    context_window,
    load_model,
    load_tokenizer,
    model_config,
)
from tests.engine.tiny_models import save_multimodal_model

PROMPTS = [
    "The lighthouse keeper wrote a letter every evening.",
    "A good sentence",
    "Once upon a time there was a small fox who wanted to see the mountains. Every morning he climbed",
    "Rain",
    "To make a simple soup, warm a little oil in a pot, add a chopped onion and cook it until it is soft.",
    "The market opened at seven.",
]


@pytest.fixture(scope="module")
def loaded(tiny_model_path):
    torch.manual_seed(0)
    return load_model(ModelSpec("tiny", str(tiny_model_path), dtype="float32", device="cpu"))


def reference(loaded, prompt_ids: list[int], new_tokens: int) -> list[int]:
    ids = torch.tensor([prompt_ids])
    with torch.inference_mode():
        out = loaded.model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False
        )
    return out[0, len(prompt_ids) :].tolist()


def run(engine: Engine, prompt_ids, **params) -> GenerationRequest:
    pieces: list[str] = []
    request = GenerationRequest(str(id(pieces)), prompt_ids, SamplingParams(**params), on_text=pieces.append)
    request.pieces = pieces
    return engine.submit(request)


@pytest.mark.parametrize("capacity", [256, 8])
def test_greedy_output_equals_generate_token_for_token_while_requests_come_and_go(loaded, capacity):
    tokenizer = loaded.tokenizer
    jobs = [(tokenizer(p).input_ids, 10 + 7 * i) for i, p in enumerate(PROMPTS)]
    expected = [reference(loaded, ids, n) for ids, n in jobs]
    # A tiny initial cache forces the engine through growing, shifting and compacting.
    engine = Engine(loaded, max_batch=4, initial_capacity=capacity).start()
    try:
        requests = []
        for i, (ids, n) in enumerate(jobs):
            requests.append(run(engine, ids, max_new_tokens=n, temperature=0))
            if i % 2:
                time.sleep(0.02)  # some join a batch that is already decoding
        results = [r.wait(60) for r in requests]
    finally:
        engine.stop()
    for request, result, want in zip(requests, results, expected, strict=True):
        # generate stops at end-of-sequence (and pads after it); so does the engine.
        eos = loaded.tokenizer.eos_token_id
        if eos in want:
            want = want[: want.index(eos) + 1]
        assert result.token_ids == want
        assert "".join(request.pieces) == result.text
        assert result.prompt_tokens == len(request.prompt_ids)
        assert result.completion_tokens == len(want)


def test_each_request_keeps_its_own_length_and_finish_reason(loaded):
    ids = loaded.tokenizer(PROMPTS[0]).input_ids
    engine = Engine(loaded, max_batch=8).start()
    try:
        short = run(engine, ids, max_new_tokens=3, temperature=0, ignore_eos=True)
        long = run(engine, ids, max_new_tokens=40, temperature=0, ignore_eos=True)
        short_result, long_result = short.wait(30), long.wait(30)
    finally:
        engine.stop()
    assert (short_result.completion_tokens, short_result.finish_reason) == (3, FinishReason.LENGTH)
    assert (long_result.completion_tokens, long_result.finish_reason) == (40, FinishReason.LENGTH)
    assert long_result.token_ids[:3] == short_result.token_ids


def test_sampling_is_reproducible_with_a_seed_and_varies_without(loaded):
    ids = loaded.tokenizer(PROMPTS[2]).input_ids
    params = {"max_new_tokens": 30, "temperature": 1.0, "top_p": 0.9, "top_k": 50, "ignore_eos": True}
    engine = Engine(loaded, max_batch=8).start()
    try:
        seeded = [run(engine, ids, seed=1234, **params) for _ in range(2)]
        other = run(engine, ids, seed=99, **params)
        greedy = run(engine, ids, max_new_tokens=30, temperature=0, ignore_eos=True)
        seeded_ids = [r.wait(30).token_ids for r in seeded]
        other_ids, greedy_ids = other.wait(30).token_ids, greedy.wait(30).token_ids
    finally:
        engine.stop()
    assert seeded_ids[0] == seeded_ids[1]
    assert other_ids != seeded_ids[0]
    assert greedy_ids == reference(loaded, ids, 30)[: len(greedy_ids)]


def test_repetition_penalty_changes_greedy_output(loaded):
    ids = loaded.tokenizer(PROMPTS[3]).input_ids
    engine = Engine(loaded, max_batch=8).start()
    try:
        plain = run(engine, ids, max_new_tokens=40, temperature=0, ignore_eos=True).wait(30)
        penalised = run(engine, ids, max_new_tokens=40, temperature=0, repetition_penalty=1.8, ignore_eos=True).wait(30)
    finally:
        engine.stop()
    # An untrained model repeats itself; a strong penalty makes it use more distinct tokens.
    assert len(set(penalised.token_ids)) > len(set(plain.token_ids))


def test_a_stop_sequence_ends_the_text_before_it(loaded):
    tokenizer = loaded.tokenizer
    ids = tokenizer(PROMPTS[4]).input_ids
    full = tokenizer.decode(reference(loaded, ids, 60), skip_special_tokens=True)
    stop = full[20:24]
    assert stop.strip(), "the reference text must have a usable stop sequence"
    engine = Engine(loaded, max_batch=8).start()
    try:
        request = run(engine, ids, max_new_tokens=60, temperature=0, stop=(stop,))
        result = request.wait(30)
    finally:
        engine.stop()
    assert result.finish_reason == FinishReason.STOP
    assert result.text == full[: full.index(stop)]
    assert stop not in "".join(request.pieces)


def test_cancel_stops_a_running_request_at_the_next_token_and_keeps_its_text(loaded):
    ids = loaded.tokenizer(PROMPTS[1]).input_ids
    engine = Engine(loaded, max_batch=8).start()
    first_text = threading.Event()
    try:
        request = GenerationRequest(
            "to-cancel",
            ids,
            SamplingParams(max_new_tokens=1000, temperature=0, ignore_eos=True),
            on_text=lambda piece: first_text.set(),
        )
        engine.submit(request)
        assert first_text.wait(30)
        assert engine.cancel("to-cancel")
        result = request.wait(30)
    finally:
        engine.stop()
    assert result.finish_reason == FinishReason.CANCELLED
    assert 0 < result.completion_tokens < 1000
    assert result.token_ids == reference(loaded, ids, result.completion_tokens)


def test_a_request_longer_than_the_context_is_refused_with_a_reason(loaded):
    engine = Engine(loaded, max_batch=2).start()
    try:
        with pytest.raises(EngineError, match="exceeds the model's context of 1024 tokens"):
            engine.submit(GenerationRequest("long", [1] * 1000, SamplingParams(max_new_tokens=100)))
        with pytest.raises(EngineError, match="prompt is empty"):
            engine.submit(GenerationRequest("empty", [], SamplingParams(max_new_tokens=10)))
    finally:
        engine.stop()


def test_a_multimodal_models_context_window_is_its_text_parts_and_the_engine_refuses_by_it(tmp_path, tiny_model_path):
    # The configuration has no position limit at its top level, only in its text part (96); the
    # tokenizer allows 1024. The engine used to read the top level, fall back to the tokenizer and
    # take 1024 tokens, while the web side admitted only 96.
    path = save_multimodal_model(tmp_path / "fuyu", load_tokenizer(str(tiny_model_path)), max_context=96)
    config = model_config(str(path))
    assert getattr(config, "max_position_embeddings", None) is None
    assert load_tokenizer(str(path)).model_max_length == 1024

    loaded = load_model(ModelSpec("fuyu", str(path), dtype="float32", device="cpu"))

    assert loaded.max_context == context_window(config, load_tokenizer(str(path))) == 96
    engine = Engine(loaded, max_batch=2).start()
    try:
        with pytest.raises(EngineError, match="exceeds the model's context of 96 tokens"):
            engine.submit(GenerationRequest("over", [5] * 90, SamplingParams(max_new_tokens=7)))
        result = engine.submit(GenerationRequest("fits", [5] * 90, SamplingParams(max_new_tokens=6))).wait(60)
    finally:
        engine.stop()
    assert (result.finish_reason, result.completion_tokens) == (FinishReason.LENGTH, 6)
