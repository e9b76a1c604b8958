"""The models users can pick (INFERENCE_MODELS), seen from the web side: names, tokenizers, limits.

Web processes count prompt tokens with the model's own tokenizer but never load weights.
"""

from __future__ import annotations

import functools
from pathlib import Path

from django.conf import settings

from billing.selectors import Entitlements
from core.errors import ApplicationError
from inference.engine import TokenizerCache, context_window, model_config

_tokenizers = TokenizerCache()


def model_names() -> list[str]:
    return list(settings.INFERENCE_MODELS)


def runnable_models(entitlements: Entitlements) -> list[str]:
    """The plan's models that this server runs, in the plan's order: what its user may pick (the
    first one when they pick none)."""
    return [m for m in entitlements.allowed_models if m in settings.INFERENCE_MODELS]


def tokenizer_for(name: str):
    try:
        return _tokenizers.get(settings.INFERENCE_MODELS[name])
    except OSError as exc:
        raise ApplicationError(
            f"The model {name!r} is not available on this server right now.", code="model_unavailable", status_code=503
        ) from exc


@functools.cache
def max_context(name: str) -> int:
    """The model's context window, read from its config without loading the weights, by the rule
    the engine refuses requests by (so the web never admits a prompt the engine would refuse)."""
    return context_window(model_config(settings.INFERENCE_MODELS[name]), tokenizer_for(name))


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


def text_token_count(name: str, text: str) -> int:
    """How many tokens ``text`` is for model ``name``'s tokenizer (no special tokens added)."""
    return len(tokenizer_for(name)(text, add_special_tokens=False).input_ids)


def local_model_missing(name: str) -> bool:
    source = settings.INFERENCE_MODELS[name]
    looks_local = source.startswith((".", "/")) or Path(source).exists()
    return looks_local and not (Path(source) / "config.json").exists()
