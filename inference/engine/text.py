"""Turning generated token ids into text as they come, with stop sequences.

Text is released only when it is final: an incomplete UTF-8 character (a byte-level token that
splits one) and a tail that could still grow into a stop sequence are held back until the next
token decides them.
"""

from __future__ import annotations

from collections.abc import Sequence


class TextAssembler:
    def __init__(self, tokenizer, stop: Sequence[str] = ()) -> None:
        self._tokenizer = tokenizer
        self._stop = tuple(s for s in stop if s)
        self.token_ids: list[int] = []
        self.text = ""  # all text decoded so far, stop sequence excluded once found
        self.released = 0  # how many characters of self.text were handed out
        self.stopped = False

    def add(self, token_id: int) -> str:
        """Take one token; return the newly final text (may be empty). Sets ``stopped``."""
        self.token_ids.append(token_id)
        text = self._tokenizer.decode(self.token_ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            # A character split across tokens: wait for the rest of its bytes.
            return ""
        self.text = text
        for stop in self._stop:
            # Only the new tail can complete a stop sequence; search from where it could start.
            at = text.find(stop, max(0, self.released - len(stop)))
            if at != -1:
                self.text = text[:at]
                self.stopped = True
                break
        return self._release(final=self.stopped)

    def finish(self) -> str:
        """The generation ended: whatever was held back is final now."""
        return self._release(final=True)

    def _release(self, *, final: bool) -> str:
        end = len(self.text)
        if not final:
            end -= self._held_tail()
        if end <= self.released:
            return ""
        piece = self.text[self.released : end]
        self.released = end
        return piece

    def _held_tail(self) -> int:
        """Length of the longest end of the text that is the start of some stop sequence."""
        longest = 0
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(self.text)), longest, -1):
                if self.text.endswith(stop[:size]):
                    longest = size
                    break
        return longest
