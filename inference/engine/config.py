"""What a model's configuration says, read without torch and without the weights: web processes
(which only count tokens) and the engine (which loads the model) ask it here, so that they agree.
"""

from __future__ import annotations

from transformers import AutoConfig, PretrainedConfig

# Where configurations keep their position limit, by architecture (Llama and most; GPT-2; others).
CONTEXT_ATTRIBUTES = ("max_position_embeddings", "n_positions", "max_sequence_length")


def model_config(source: str) -> PretrainedConfig:
    """The configuration of the model at ``source`` (hub id or local path), without its weights."""
    return AutoConfig.from_pretrained(source)


def context_window(config: PretrainedConfig, tokenizer) -> int:
    """The most tokens (prompt and generated together) the model takes: the position limit of its
    text model (a multimodal configuration keeps it in its text part, not at the top), else the
    tokenizer's ``model_max_length``. The web side admits a prompt by this number and the engine
    refuses one by it, so it must be this one function on both sides."""
    text = config.get_text_config()
    for attribute in CONTEXT_ATTRIBUTES:
        value = getattr(text, attribute, None)
        if value:
            return int(value)
    return int(tokenizer.model_max_length)
