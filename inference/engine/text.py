"""Turning generated token ids into text as they come, with stop sequences, at constant work per token.

Each new token is decoded in a small window: a few tokens already turned into text (the context that
decoders need, e.g. for SentencePiece's leading-space marker) plus the tokens not yet settled. The
window's text past what was already given out is the new text. The pieces, joined, equal
``tokenizer.decode(all_ids, skip_special_tokens=True)``: the property tests in tests/engine/test_text.py
hold every tokenizer kind we ship against that.

Text is released only when it is final:
- a character split across tokens (a byte-level token or a ``<0xNN>`` byte-fallback token that ends
  inside a UTF-8 sequence, which decodes to U+FFFD for now) waits for the next token;
- where the tokenizer cleans up tokenization spaces (``" ."`` -> ``"."``), a space that the next
  characters could still remove waits for them;
- a tail that could still grow into a stop sequence waits until the next token decides it.
"""

from __future__ import annotations

import contextlib
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

REPLACEMENT = "\ufffd"

# How many tokens the window keeps as context once settled, and how long it may grow before it is
# cut back to them (cutting costs one more decode, so it is done every few tokens, not every token).
CONTEXT_TOKENS = 4
WINDOW_LIMIT = 2 * CONTEXT_TOKENS

# transformers' clean_up_tokenization, in its order: each replacement runs over the whole text in turn.
CLEANUP_REPLACEMENTS = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)
CLEANUP_PROBES = ("a .", "a ,", "a ?", "a !", "a 's")

BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


@dataclass(frozen=True)
class TokenizerTraits:
    """What the incremental decoder must know of a tokenizer, found once per tokenizer."""

    skipped_ids: frozenset[int]  # ids that skip_special_tokens drops
    byte_ids: frozenset[int]  # byte-fallback tokens: a run of them decodes only as a whole
    cleans_up_spaces: bool  # decode applies clean_up_tokenization


_traits_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tokenizer_traits(tokenizer) -> TokenizerTraits:
    with contextlib.suppress(KeyError, TypeError):
        return _traits_cache[tokenizer]
    traits = TokenizerTraits(_skipped_ids(tokenizer), _byte_ids(tokenizer), _cleans_up_spaces(tokenizer))
    with contextlib.suppress(TypeError):  # not weak-referenceable: found again for each assembler
        _traits_cache[tokenizer] = traits
    return traits


def _skipped_ids(tokenizer) -> frozenset[int]:
    # Asked of the tokenizer itself: which added tokens its decode really drops when told to.
    candidates = set(getattr(tokenizer, "added_tokens_decoder", {})) | set(tokenizer.all_special_ids)
    return frozenset(
        token_id
        for token_id in candidates
        if tokenizer.decode([token_id], skip_special_tokens=True) == ""
        and tokenizer.decode([token_id], skip_special_tokens=False) != ""
    )


def _byte_ids(tokenizer) -> frozenset[int]:
    return frozenset(token_id for token, token_id in tokenizer.get_vocab().items() if BYTE_TOKEN.fullmatch(token))


def _cleans_up_spaces(tokenizer) -> bool:
    # Whether decode cleans up depends on the tokenizer's settings and its model kind (transformers
    # skips it for BPE); watching decode do it is the one answer that cannot drift from transformers.
    for probe in CLEANUP_PROBES:
        ids = tokenizer.encode(probe, add_special_tokens=False)
        raw = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        if raw != tokenizer.decode(ids, skip_special_tokens=True):
            return True
    return False


class WindowDecoder:
    """Token ids in, settled text out, decoding only the last few tokens at each step."""

    def __init__(self, tokenizer, traits: TokenizerTraits) -> None:
        self._tokenizer = tokenizer
        self._traits = traits
        self._window: list[int] = []
        self._given = 0  # characters of the window's text already given out

    def add(self, token_id: int) -> str:
        if token_id in self._traits.skipped_ids:
            return ""  # the full decode drops it too; kept out so it never becomes the context
        self._window.append(token_id)
        if token_id in self._traits.byte_ids:
            return ""  # a run of byte tokens decodes as a whole (or as U+FFFDs) once it is closed
        text = self._decode(self._window)
        # A trailing U+FFFD may be an unfinished character: the next token decides it.
        end = len(text) - 1 if text.endswith(REPLACEMENT) else len(text)
        piece = text[self._given : end] if end > self._given else ""
        self._given = max(self._given, end)
        if len(self._window) > WINDOW_LIMIT:
            self._shrink(held=len(text) - self._given)
        return piece

    def finish(self) -> str:
        text = self._decode(self._window)
        piece = text[self._given :]
        self._window, self._given = [], 0
        return piece

    def _shrink(self, *, held: int) -> None:
        # At most one character (the last) is held, and it comes from the last token, so the kept
        # tokens decode it the same way: count everything before it as given.
        self._window = self._window[-CONTEXT_TOKENS:]
        self._given = len(self._decode(self._window)) - held

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


class StreamingReplace:
    """``str.replace(old, new)`` over a text that arrives in pieces: the same result, joined."""

    def __init__(self, old: str, new: str) -> None:
        self._old, self._new = old, new
        self._pending = ""

    def feed(self, text: str) -> str:
        data = self._pending + text
        out: list[str] = []
        position = 0
        while (found := data.find(self._old, position)) != -1:
            out += (data[position:found], self._new)
            position = found + len(self._old)
        # Keep the longest end that could still become a match (it is shorter than ``old``).
        keep = 0
        for size in range(min(len(self._old) - 1, len(data) - position), 0, -1):
            if data.endswith(self._old[:size]):
                keep = size
                break
        out.append(data[position : len(data) - keep])
        self._pending = data[len(data) - keep :]
        return "".join(out)

    def flush(self) -> str:
        rest, self._pending = self._pending, ""
        return rest


class SpaceCleaner:
    """transformers' clean_up_tokenization as a stream: each replacement feeds the next."""

    def __init__(self) -> None:
        self._stages = [StreamingReplace(old, new) for old, new in CLEANUP_REPLACEMENTS]

    def feed(self, text: str) -> str:
        for stage in self._stages:
            text = stage.feed(text)
        return text

    def flush(self) -> str:
        text = ""
        for stage in self._stages:
            text = stage.feed(text) + stage.flush()
        return text


class TextAssembler:
    def __init__(self, tokenizer, stop: Sequence[str] = ()) -> None:
        traits = tokenizer_traits(tokenizer)
        self._decoder = WindowDecoder(tokenizer, traits)
        self._cleaner = SpaceCleaner() if traits.cleans_up_spaces else None
        self._stop = tuple(s for s in stop if s)
        self.token_ids: list[int] = []
        self._pieces: list[str] = []  # the released text, joined only when asked for
        self._held = ""  # settled text not released yet: it could be the start of a stop sequence
        self.released = 0  # how many characters were handed out
        self.stopped = False

    @property
    def text(self) -> str:
        """All settled text so far (the stop sequence excluded once found); final after finish()."""
        if len(self._pieces) > 1:
            self._pieces[:] = ["".join(self._pieces)]
        return (self._pieces[0] if self._pieces else "") + self._held

    def add(self, token_id: int) -> str:
        """Take one token; return the newly final text (may be empty). Sets ``stopped``."""
        self.token_ids.append(token_id)
        if self.stopped:
            return ""
        piece = self._decoder.add(token_id)
        if self._cleaner is not None:
            piece = self._cleaner.feed(piece)
        return self._take(piece)

    def finish(self) -> str:
        """The generation ended: whatever was held back is final now (a stop sequence is still cut)."""
        if self.stopped:
            return ""
        piece = self._decoder.finish()
        if self._cleaner is not None:
            piece = self._cleaner.feed(piece) + self._cleaner.flush()
        out = self._take(piece)
        if not self.stopped and self._held:
            out += self._release(self._held)
            self._held = ""
        return out

    def _take(self, piece: str) -> str:
        """Settled text in; the part of it (and of the held tail) that is final out."""
        if not piece:
            return ""
        # A stop sequence that ends in this piece starts within the held tail or the piece.
        window = self._held + piece
        at = self._first_stop(window)
        if at is not None:
            self._held = ""
            self.stopped = True
            return self._release(window[:at])
        keep = self._stop_start_length(window)
        self._held = window[len(window) - keep :]
        return self._release(window[: len(window) - keep])

    def _release(self, piece: str) -> str:
        if piece:
            self._pieces.append(piece)
            self.released += len(piece)
        return piece

    def _first_stop(self, window: str) -> int | None:
        """Where the stop sequence that completes first (the earliest end) starts, if any does."""
        best: tuple[int, int] | None = None
        for stop in self._stop:
            at = window.find(stop)
            if at != -1 and (best is None or (at + len(stop), at) < best):
                best = (at + len(stop), at)
        return best[1] if best else None

    def _stop_start_length(self, window: str) -> int:
        """Length of the longest end of ``window`` that is the start of some stop sequence."""
        longest = 0
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(window)), longest, -1):
                if window.endswith(stop[:size]):
                    longest = size
                    break
        return longest
