"""Tiny random decoder models built in the tests (no download), and ``generate``'s greedy output
to hold the engine against."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, FuyuConfig, PretrainedConfig

from inference.engine import LoadedModel, ModelSpec


def tiny_model(name: str, config_class: type[PretrainedConfig], tokenizer, *, max_context: int, **extra) -> LoadedModel:
    """Two layers, width 64, four query heads over two key/value heads; seeded, float32, on CPU."""
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_context,
        **extra,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    return LoadedModel(
        ModelSpec(name, "built in the test"), model, tokenizer, torch.device("cpu"), "float32", max_context
    )


def greedy_reference(loaded: LoadedModel, prompt_ids: list[int], new_tokens: int) -> list[int]:
    """``generate``'s greedy tokens, told the end-of-sequence ids the engine stops at (the model's
    and the tokenizer's), up to and including the one that ends it."""
    ids = torch.tensor([prompt_ids])
    eos = sorted(loaded.eos_token_ids)
    with torch.inference_mode():
        out = loaded.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=eos[0],
        )
    tokens = out[0, len(prompt_ids) :].tolist()
    ends = [i for i, token in enumerate(tokens) if token in eos]
    return tokens[: ends[0] + 1] if ends else tokens


def save_multimodal_model(path: Path, tokenizer, *, max_context: int) -> Path:
    """A tiny random Fuyu (a causal LM that also reads images) with ``tokenizer``, saved to ``path``
    like a hub model. Its configuration keeps the position limit in its text part only; its
    tokenizer allows more (``model_max_length``), so a rule that does not look there disagrees."""
    eos = tokenizer.eos_token_id
    config = FuyuConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": max_context,
        },
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
