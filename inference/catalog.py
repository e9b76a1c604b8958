"""The models users can pick (INFERENCE_MODELS), seen from the web side: names, tokenizers, limits.

Web processes count prompt tokens with the model's own tokenizer but never load weights.
"""

from __future__ import annotations

import functools
from pathlib import Path

from django.conf import settings

from core.errors import ApplicationError
from inference.engine.tokenization import TokenizerCache

_tokenizers = TokenizerCache()


def model_names() -> list[str]:
    return list(settings.INFERENCE_MODELS)


def tokenizer_for(name: str):
    try:
        return _tokenizers.get(settings.INFERENCE_MODELS[name])
    except OSError as exc:
        raise ApplicationError(
            f"The model {name!r} is not available on this server right now.", code="model_unavailable", status_code=503
        ) from exc


@functools.cache
def max_context(name: str) -> int:
    """The model's context window, read from its config without loading the weights."""
    from transformers import AutoConfig

    source = settings.INFERENCE_MODELS[name]
    config = AutoConfig.from_pretrained(source)
    text = config.get_text_config()
    for attribute in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(text, attribute, None)
        if value:
            return int(value)
    return int(tokenizer_for(name).model_max_length)


def has_chat_template(name: str) -> bool:
    return bool(getattr(tokenizer_for(name), "chat_template", None))


def prompt_token_ids(name: str, *, prompt: str | None = None, messages: list[dict] | None = None) -> list[int]:
    """The token ids the engine will see: the prompt as is, or the chat turns through the
    tokenizer's chat template (with the assistant's turn opened)."""
    tokenizer = tokenizer_for(name)
    if messages is not None:
        return list(
            tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        )
    return list(tokenizer(prompt or "", add_special_tokens=True).input_ids)


def local_model_missing(name: str) -> bool:
    source = settings.INFERENCE_MODELS[name]
    looks_local = source.startswith((".", "/")) or Path(source).exists()
    return looks_local and not (Path(source) / "config.json").exists()
