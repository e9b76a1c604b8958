"""Tokenizers alone (no torch, no weights): what web processes need to count prompt tokens."""

from __future__ import annotations

import threading

from transformers import AutoTokenizer


def load_tokenizer(source: str):
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.padding_side = "left"
    return tokenizer


class TokenizerCache:
    """One tokenizer per source per process, loaded on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokenizers: dict[str, object] = {}

    def get(self, source: str):
        with self._lock:
            if source not in self._tokenizers:
                self._tokenizers[source] = load_tokenizer(source)
            return self._tokenizers[source]
