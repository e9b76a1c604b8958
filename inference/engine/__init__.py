"""The generation engine: torch and transformers only, nothing of Django or of the rest of Inkwell.

Its public surface is ``__all__`` below; code outside the engine imports from here, not from the
submodules. Each name is imported on first use (PEP 562), so a web process that only counts
tokens (``load_tokenizer``, ``model_config``, ``context_window``) never imports the scheduler or
the model loader, which need torch.
"""

from __future__ import annotations

import importlib

# Public name -> (submodule, its name there).
_EXPORTS = {
    # the scheduler (torch)
    "Engine": ("scheduler", "Engine"),
    # the vocabulary (no torch)
    "EngineError": ("types", "EngineError"),
    "EngineProtocol": ("types", "EngineProtocol"),
    "FinishReason": ("types", "FinishReason"),
    "GenerationRequest": ("types", "GenerationRequest"),
    "GenerationResult": ("types", "GenerationResult"),
    "MIN_TEMPERATURE": ("types", "MIN_TEMPERATURE"),
    "SamplingParams": ("types", "SamplingParams"),
    # the engine without a model (no torch)
    "NoopEngine": ("noop", "NoopEngine"),
    # an OpenAI-compatible inference server as the engine (the openai client, no torch)
    "RemoteEngine": ("remote", "RemoteEngine"),
    "RemoteRequest": ("remote", "RemoteRequest"),
    # loading a model (torch)
    "LoadedModel": ("loading", "LoadedModel"),
    "ModelSpec": ("loading", "ModelSpec"),
    "load_model": ("loading", "load_model"),
    "PRECISIONS": ("loading", "PRECISIONS"),
    "model_bytes": ("loading", "model_bytes"),
    "precisions_on": ("loading", "precisions_on"),
    # what web processes need (no torch of the engine's own)
    "TokenizerCache": ("tokenization", "TokenizerCache"),
    "load_tokenizer": ("tokenization", "load_tokenizer"),
    "context_window": ("config", "context_window"),
    "model_config": ("config", "model_config"),
    # the demo model, built locally (torch)
    "DEMO_CORPUS": ("demo", "CORPUS"),
    "DEMO_SIZES": ("demo", "SIZES"),
    "build_demo_model": ("demo", "build_demo_model"),
    "demo_corpus_split": ("demo", "corpus_split"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
    globals()[name] = value  # the next lookup is a plain global
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
