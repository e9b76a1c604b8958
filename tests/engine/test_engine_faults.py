"""The engine under faults: a request whose numbers turn to NaN, whose temperature is too small to
divide by, or whose forward pass raises ends alone with an error while the rest of its batch
writes exactly what it would have; and a scheduler thread that dies ends every request it held."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import threading
import time
from collections.abc import Callable

import pytest
import torch
from transformers import Qwen3Config

from inference.engine import (
    MIN_TEMPERATURE,
    Engine,
    EngineError,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    LoadedModel,
    SamplingParams,
    load_tokenizer,
)
from inference.engine.sampling import RowSampler, choose_tokens
from inference.engine.scheduler import ERROR_INVALID_NUMBERS
from tests.engine.tiny_models import greedy_reference, tiny_model

PROMPTS = [
    "The lighthouse keeper wrote a letter every evening.",
    "Once upon a time there was a small fox who wanted to see the mountains. Every morning he climbed",
    "The market opened at seven.",
]
ODD_PROMPT = "A purple walrus sang quietly to the moon"
NEW_TOKENS = 30


@pytest.fixture(scope="module")
def loaded(tiny_model_path) -> LoadedModel:
    """A tiny random Qwen3 on the demo tokenizer. Unlike the untrained GPT-2 demo model, which
    repeats one token, it writes varied tokens: a row that went wrong shows in its output, and a
    fault can be tied to a token that only one request writes."""
    tokenizer = load_tokenizer(str(tiny_model_path))
    return tiny_model("qwen3", Qwen3Config, tokenizer, max_context=1024, head_dim=16)


@pytest.fixture(scope="module")
def prompt_ids(loaded) -> list[list[int]]:
    return [loaded.tokenizer(p).input_ids for p in PROMPTS]


@pytest.fixture(scope="module")
def expected(loaded, prompt_ids) -> list[list[int]]:
    return [greedy_reference(loaded, ids, NEW_TOKENS) for ids in prompt_ids]


@pytest.fixture(scope="module")
def odd_token(loaded, prompt_ids, expected) -> int:
    """A token of ODD_PROMPT that no other prompt holds or writes: what the faults are tied to."""
    innocent = {t for ids in prompt_ids + expected for t in ids}
    candidates = [t for t in loaded.tokenizer(ODD_PROMPT).input_ids if t not in innocent]
    assert candidates, "ODD_PROMPT needs a token of its own"
    return candidates[0]


_request_numbers = itertools.count()


def greedy(
    ids: list[int], new_tokens: int = NEW_TOKENS, on_text: Callable[[str], None] | None = None
) -> GenerationRequest:
    return GenerationRequest(
        f"r{next(_request_numbers)}", list(ids), SamplingParams(max_new_tokens=new_tokens, temperature=0), on_text
    )


def submit_together(engine: Engine, requests: list[GenerationRequest]) -> list[GenerationRequest]:
    # Holding the engine's (re-entrant) lock keeps its loop from taking the first request before
    # the others are in, so all of them are prefilled as one packed sequence.
    with engine._condition:
        for request in requests:
            engine.submit(request)
    return requests


def results(requests: list[GenerationRequest], timeout: float = 60) -> list[GenerationResult]:
    for request in requests:
        assert request.wait(timeout) is not None, f"request {request.request_id} never ended"
    return [request.result for request in requests]


def wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def with_nan_embedding(loaded: LoadedModel, token: int) -> LoadedModel:
    """A copy of the model whose input embedding of ``token`` is NaN: any sequence holding that
    token turns to NaN, as a broken checkpoint or an overflow in half precision would."""
    model = copy.deepcopy(loaded.model)
    embeddings, output = model.get_input_embeddings(), model.get_output_embeddings()
    # Were the output layer tied to the embeddings, every row's logits would hold a NaN.
    assert output.weight.data_ptr() != embeddings.weight.data_ptr()
    with torch.no_grad():
        embeddings.weight[token] = float("nan")
    return dataclasses.replace(loaded, model=model)


def fail_forward_on(monkeypatch, model: torch.nn.Module, token: int, exc: Exception) -> None:
    """Make every forward pass whose input holds ``token`` raise ``exc`` halfway: after the first
    layer wrote its keys and values into the cache, as a real fault (out of memory) would."""
    real_forward = model.forward

    def fail(module, args):
        raise exc

    def forward(*args, **kwargs):
        if not (kwargs["input_ids"] == token).any():
            return real_forward(*args, **kwargs)
        hook = model.model.layers[1].register_forward_pre_hook(fail)
        try:
            return real_forward(*args, **kwargs)
        finally:
            hook.remove()

    monkeypatch.setattr(model, "forward", forward)


def written_later(ids: list[int], want: list[int], innocent: set[int]) -> int:
    """The first position (from the third on) where ``want`` writes a token found nowhere else."""
    return next(i for i, token in enumerate(want) if i >= 2 and token not in innocent | set(ids) | set(want[:i]))


# --- temperature --------------------------------------------------------------------------------


def test_a_temperature_below_the_minimum_means_greedy() -> None:
    assert MIN_TEMPERATURE == 0.01
    assert SamplingParams(temperature=0).greedy
    assert SamplingParams(temperature=1e-45).greedy
    assert SamplingParams(temperature=0.0099).greedy
    assert not SamplingParams(temperature=0.01).greedy


def test_a_near_zero_temperature_beside_a_sampled_request_fails_neither(loaded, prompt_ids, expected) -> None:
    warm = SamplingParams(max_new_tokens=NEW_TOKENS, temperature=0.8, top_p=0.9, seed=11)
    cold = SamplingParams(max_new_tokens=NEW_TOKENS, temperature=1e-45)
    engine = Engine(loaded, max_batch=8).start()
    try:
        together = submit_together(
            engine, [GenerationRequest("cold", prompt_ids[0], cold), GenerationRequest("warm", prompt_ids[1], warm)]
        )
        cold_result, warm_result = results(together)
        warm_alone = results([engine.submit(GenerationRequest("alone", prompt_ids[1], warm))])[0]
    finally:
        engine.stop()
    assert (cold_result.error, warm_result.error) == ("", "")
    assert cold_result.token_ids == expected[0]
    assert warm_result.token_ids == warm_alone.token_ids
    assert len(warm_result.token_ids) > 0


def test_choosing_tokens_gives_a_row_with_nan_none_and_the_others_their_tokens() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 50)
    logits[2, 7] = float("nan")
    params = [
        SamplingParams(temperature=1.0, seed=1),
        SamplingParams(temperature=0),
        SamplingParams(temperature=1.0, seed=2),
        SamplingParams(temperature=1.0, top_p=0.5, top_k=-3, seed=3),  # no filter may empty a row
    ]
    tokens = choose_tokens(logits, [RowSampler(p, torch.device("cpu")) for p in params], None)
    assert tokens[2] is None
    assert tokens[1] == int(logits[1].argmax())
    assert all(isinstance(t, int) for i, t in enumerate(tokens) if i != 2)


def test_sampling_numbers_that_are_not_finite_are_refused_at_submit(loaded, prompt_ids) -> None:
    engine = Engine(loaded, max_batch=2).start()
    try:
        for params in (
            SamplingParams(temperature=float("nan")),
            SamplingParams(top_p=float("inf")),
            SamplingParams(repetition_penalty=0.0),
        ):
            with pytest.raises(EngineError, match="finite"):
                engine.submit(GenerationRequest("bad", prompt_ids[0], params))
    finally:
        engine.stop()


# --- NaN in the model's numbers -------------------------------------------------------------------


# First, the failed prompt leaves the batch empty before the others are prefilled again.
@pytest.mark.parametrize("odd_at", [0, 2])
def test_a_prompt_that_turns_the_model_to_nan_fails_alone_in_a_packed_prefill(
    loaded, prompt_ids, expected, odd_token, odd_at
) -> None:
    poisoned = with_nan_embedding(loaded, odd_token)
    requests = [greedy(ids) for ids in prompt_ids]
    requests.insert(odd_at, greedy(loaded.tokenizer(ODD_PROMPT).input_ids))
    engine = Engine(poisoned, max_batch=8).start()
    try:
        got = results(submit_together(engine, requests))
    finally:
        engine.stop()
    odd = got.pop(odd_at)
    assert (odd.finish_reason, odd.error) == (FinishReason.ERROR, ERROR_INVALID_NUMBERS)
    assert (odd.completion_tokens, odd.text) == (0, "")
    for result, want in zip(got, expected, strict=True):
        assert result.error == ""
        assert result.token_ids == want


def test_a_prompt_that_turns_the_model_to_nan_fails_alone_when_it_joins_a_running_batch(
    loaded, prompt_ids, expected, odd_token
) -> None:
    poisoned = with_nan_embedding(loaded, odd_token)
    odd_ids = loaded.tokenizer(ODD_PROMPT).input_ids
    first_text = threading.Event()
    engine = Engine(poisoned, max_batch=8).start()
    try:
        running = submit_together(
            engine, [greedy(prompt_ids[0], on_text=lambda piece: first_text.set()), greedy(prompt_ids[1])]
        )
        assert first_text.wait(30)
        odd = engine.submit(greedy(odd_ids))
        results([odd])
        later = engine.submit(greedy(prompt_ids[2]))  # takes the cache row the failed prompt wrote
        got = results([*running, later])
    finally:
        engine.stop()
    assert (odd.result.finish_reason, odd.result.error) == (FinishReason.ERROR, ERROR_INVALID_NUMBERS)
    for result, want in zip(got, expected, strict=True):
        assert result.error == ""
        assert result.token_ids == want


def test_a_row_that_turns_nan_while_decoding_keeps_its_text_and_the_others_go_on(loaded) -> None:
    tokenizer = loaded.tokenizer
    long_ids, victim_ids, late_ids = (tokenizer(p).input_ids for p in (PROMPTS[1], PROMPTS[0], "Rain"))
    long_want, late_want = greedy_reference(loaded, long_ids, 60), greedy_reference(loaded, late_ids, 10)
    victim_want = greedy_reference(loaded, victim_ids, NEW_TOKENS)
    # The victim's prompt is clean; a token it writes itself poisons the step that reads it back.
    at = written_later(victim_ids, victim_want, set(long_ids + long_want + late_ids + late_want))
    poisoned = with_nan_embedding(loaded, victim_want[at])
    pieces: list[str] = []
    engine = Engine(poisoned, max_batch=8).start()
    try:
        long_request = greedy(long_ids, 60, on_text=pieces.append)
        victim = greedy(victim_ids)
        submit_together(engine, [long_request, victim])
        victim_result = results([victim])[0]
        # Let the batch move on a few columns first, so that the late row's padding covers the
        # column where the victim's NaN keys and values were written.
        so_far = len(pieces)
        wait_until(lambda: len(pieces) >= so_far + 3 or long_request.done.is_set())
        late = engine.submit(greedy(late_ids, 10))
        long_result, late_result = results([long_request, late])
    finally:
        engine.stop()
    assert (victim_result.finish_reason, victim_result.error) == (FinishReason.ERROR, ERROR_INVALID_NUMBERS)
    assert victim_result.token_ids == victim_want[: at + 1]
    assert victim_result.completion_tokens == at + 1
    assert victim_result.text == tokenizer.decode(victim_want[: at + 1], skip_special_tokens=True)
    assert long_result.token_ids == long_want
    assert late_result.token_ids == late_want


# --- a forward pass that raises -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (RuntimeError("injected fault"), "the model failed on this request (RuntimeError: injected fault)"),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "(out of memory)"),
    ],
)
def test_a_prompt_whose_prefill_raises_fails_alone(
    loaded, prompt_ids, expected, odd_token, monkeypatch, fault, error
) -> None:
    fail_forward_on(monkeypatch, loaded.model, odd_token, fault)
    odd_ids = loaded.tokenizer(ODD_PROMPT).input_ids
    engine = Engine(loaded, max_batch=8).start()
    try:
        requests = submit_together(engine, [greedy(prompt_ids[0]), greedy(odd_ids), greedy(prompt_ids[1])])
        first, odd, second = results(requests)
        # The engine goes on taking requests.
        third = results([engine.submit(greedy(prompt_ids[2]))])[0]
    finally:
        engine.stop()
    assert odd.finish_reason == FinishReason.ERROR
    assert error in odd.error
    assert (odd.completion_tokens, odd.text) == (0, "")
    for result, want in zip([first, second, third], expected, strict=True):
        assert result.error == ""
        assert result.token_ids == want


def test_a_row_whose_decoding_step_raises_fails_alone_and_the_others_write_what_generate_does(
    loaded, prompt_ids, expected, monkeypatch
) -> None:
    victim_ids = prompt_ids[0]
    at = written_later(victim_ids, expected[0], {t for ids in prompt_ids[1:] + expected[1:] for t in ids})
    fail_forward_on(monkeypatch, loaded.model, expected[0][at], RuntimeError("injected fault"))
    engine = Engine(loaded, max_batch=8).start()
    try:
        victim, *others = results(
            submit_together(engine, [greedy(victim_ids), greedy(prompt_ids[1]), greedy(prompt_ids[2])])
        )
    finally:
        engine.stop()
    assert victim.finish_reason == FinishReason.ERROR
    assert "injected fault" in victim.error
    assert victim.token_ids == expected[0][: at + 1]
    assert victim.completion_tokens == at + 1
    for result, want in zip(others, expected[1:], strict=True):
        assert result.error == ""
        assert result.token_ids == want


# --- the scheduler thread itself ------------------------------------------------------------------


def test_when_the_scheduler_thread_dies_every_request_ends_with_an_error_and_submit_refuses(
    loaded, prompt_ids, monkeypatch
) -> None:
    first_text = threading.Event()
    engine = Engine(loaded, max_batch=8).start()
    try:
        running = engine.submit(
            GenerationRequest(
                "running",
                prompt_ids[0],
                SamplingParams(max_new_tokens=900, temperature=0, ignore_eos=True),
                on_text=lambda piece: first_text.set(),
            )
        )
        assert first_text.wait(30)
        assert engine.alive
        assert engine.failure is None

        def broken() -> list[GenerationRequest]:
            raise RuntimeError("scheduler bug")

        with engine._condition:  # the loop takes nothing until both are waiting
            monkeypatch.setattr(engine, "_take_waiting", broken)
            waiting = [engine.submit(greedy(ids)) for ids in prompt_ids[1:]]
        ended = results([running, *waiting], timeout=10)
        assert not engine.alive
        assert engine.failure == "RuntimeError: scheduler bug"
        with pytest.raises(EngineError, match="the engine stopped: RuntimeError: scheduler bug"):
            engine.submit(greedy(prompt_ids[0]))
    finally:
        engine.stop()
    for result in ended:
        assert result.finish_reason == FinishReason.ERROR
        assert result.error == "the engine stopped: RuntimeError: scheduler bug"
    assert 0 < ended[0].completion_tokens < 900
    assert ended[0].text


def test_requests_taken_off_the_queue_end_with_an_error_when_their_admission_fails(
    loaded, prompt_ids, monkeypatch
) -> None:
    engine = Engine(loaded, max_batch=8).start()

    def broken(requests: list[GenerationRequest]) -> None:
        raise RuntimeError("admission bug")

    monkeypatch.setattr(engine, "_prefill_groups", broken)
    try:
        ended = results(submit_together(engine, [greedy(ids) for ids in prompt_ids]), timeout=10)
        assert not engine.alive
    finally:
        engine.stop()
    for result in ended:
        assert (result.finish_reason, result.completion_tokens) == (FinishReason.ERROR, 0)
        assert "admission bug" in result.error


def test_an_engine_is_alive_from_start_to_stop_and_a_plain_stop_is_no_failure(loaded, prompt_ids) -> None:
    engine = Engine(loaded, max_batch=2)
    assert not engine.alive
    engine.start()
    assert engine.alive
    engine.stop()
    assert not engine.alive
    assert engine.failure is None
    with pytest.raises(EngineError, match="the engine is not running"):
        engine.submit(greedy(prompt_ids[0]))
