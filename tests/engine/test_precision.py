"""Each precision option loads the test model and generates through the engine; ``auto`` picks bf16
on a CPU with AMX and fp32 on other CPUs; an option that is unknown, or that cannot run where it
is asked to, is refused at load with the options that would work."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from inference.engine import (
    PRECISIONS,
    Engine,
    FinishReason,
    GenerationRequest,
    ModelSpec,
    SamplingParams,
    load_model,
    load_tokenizer,
    loading,
    model_bytes,
    precisions_on,
)

CPU = torch.device("cpu")
PROMPT = "The river runs past the old mill, under the stone bridge,"
NEW_TOKENS = 24


def greedy(loaded, prompt: str, new_tokens: int):
    engine = Engine(loaded, max_batch=2).start()
    try:
        ids = loaded.tokenizer(prompt).input_ids
        request = GenerationRequest("greedy", ids, SamplingParams(max_new_tokens=new_tokens, temperature=0))
        return engine.submit(request).wait(60)
    finally:
        engine.stop()


@pytest.mark.parametrize("precision", PRECISIONS)
def test_each_precision_loads_and_writes_as_many_tokens_as_asked(tiny_model_path, precision):
    loaded = load_model(ModelSpec("tiny", str(tiny_model_path), dtype=precision, device="cpu"))
    result = greedy(loaded, PROMPT, NEW_TOKENS)
    assert loaded.dtype_name == precision
    # The untrained test model never ends on its own: every row runs to its length.
    assert (result.completion_tokens, result.finish_reason) == (NEW_TOKENS, FinishReason.LENGTH)
    assert len(result.token_ids) == NEW_TOKENS
    assert result.text


def test_int4_weight_runs_on_this_cpu():
    assert "int4-weight" in precisions_on(CPU)


@pytest.mark.parametrize("precision", ["bfloat16", "int8", "int8-weight", "int4-weight"])
def test_smaller_precisions_hold_the_model_in_less_memory(tiny_model_path, precision):
    full = load_model(ModelSpec("tiny", str(tiny_model_path), dtype="float32", device="cpu"))
    smaller = load_model(ModelSpec("tiny", str(tiny_model_path), dtype=precision, device="cpu"))
    assert model_bytes(smaller.model) < model_bytes(full.model)


def test_int8_greedy_output_stays_close_to_float32(tiny_model_path):
    full = load_model(ModelSpec("tiny", str(tiny_model_path), dtype="float32", device="cpu"))
    int8 = load_model(ModelSpec("tiny", str(tiny_model_path), dtype="int8", device="cpu"))
    ids = full.tokenizer(PROMPT).input_ids
    with torch.inference_mode():
        full_logits = full.model(torch.tensor([ids])).logits
        int8_logits = int8.model(torch.tensor([ids])).logits
    # The same next-token choice at most positions, though not bit for bit the same numbers.
    agreement = (full_logits.argmax(-1) == int8_logits.argmax(-1)).float().mean().item()
    assert agreement >= 0.8
    assert not torch.equal(full_logits, int8_logits)


def test_an_unknown_precision_is_refused_before_anything_loads():
    spec = ModelSpec("tiny", "no/such/model", dtype="int3", device="cpu")
    with pytest.raises(ValueError, match=r"unknown dtype 'int3': use auto or one of float32, .*int4-weight"):
        load_model(spec)


def test_int4_where_it_cannot_run_is_refused_naming_what_can(tiny_model_path, monkeypatch):
    # As on a build of torch or torchao without an int4 kernel for this device.
    monkeypatch.setattr(loading, "int4_runs_on", lambda device: False)
    spec = ModelSpec("tiny", str(tiny_model_path), dtype="int4-weight", device="cpu")
    with pytest.raises(ValueError) as refused:
        load_model(spec)
    assert str(refused.value) == (
        "dtype int4-weight does not run on cpu with this torch and torchao; "
        "what does: float32, bfloat16, float16, int8, int8-weight"
    )


def test_int4_is_refused_for_a_model_with_no_layer_it_can_take(tiny_model_path, tmp_path):
    # Widths of 40 and 100: no linear layer's input splits into groups of 32.
    tokenizer = load_tokenizer(str(tiny_model_path))
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=40, n_inner=100, n_layer=1, n_head=2, n_positions=64)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"no linear layer has a shape int4-weight takes.*use int8 or int8-weight"):
        load_model(ModelSpec("narrow", str(tmp_path), dtype="int4-weight", device="cpu"))
    # The same model loads in int8, which takes any shape.
    assert greedy(load_model(ModelSpec("narrow", str(tmp_path), dtype="int8", device="cpu")), PROMPT, 4).token_ids


@pytest.mark.parametrize(("amx", "expected"), [(True, "bfloat16"), (False, "float32")])
def test_auto_picks_bfloat16_on_a_cpu_with_amx_and_float32_on_others(tiny_model_path, monkeypatch, amx, expected):
    capabilities = {**torch.cpu.get_capabilities(), "amx_bf16": amx}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    loaded = load_model(ModelSpec("tiny", str(tiny_model_path), dtype="auto", device="cpu"))
    assert loaded.dtype_name == expected
    assert loaded.model.dtype == getattr(torch, expected)


def test_a_set_precision_overrides_auto_on_a_cpu_with_amx(tiny_model_path, monkeypatch):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"amx_bf16": True})
    loaded = load_model(ModelSpec("tiny", str(tiny_model_path), dtype="float32", device="cpu"))
    assert loaded.model.dtype == torch.float32
