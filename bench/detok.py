"""Detokenisation cost per token: the old full-decode assembler vs the incremental one.

Usage:  .venv/bin/python bench/detok.py [--repeats 7]

The demo model's byte-level BPE tokenizer (trained locally on the shipped corpus), real text's ids
cut to a 100-token and a 4,000-token output, fed one token at a time as the scheduler does (then
``finish()``), with and without a stop sequence that never occurs. Each cell is the fastest of
``--repeats`` runs (other work on a shared machine only ever adds time); old and new run interleaved
in the same process, so the ratios are measured side by side even on a shared, noisy machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py is named like the standard library's queue module: keep this folder off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import gc
import time
from collections.abc import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference.engine import DEMO_CORPUS
from inference.engine.demo import train_tokenizer
from inference.engine.text import TextAssembler

LENGTHS = (100, 4_000)
LAST = 100  # the tokens timed alone at the end of each output
STOPS: dict[str, tuple[str, ...]] = {"no stop": (), "1 stop": ("never in this text",)}


class FullDecodeAssembler:
    """The assembler as it was before incremental detokenisation (kept here only to measure it):
    every token re-decodes the row's whole output."""

    def __init__(self, tokenizer, stop: Sequence[str] = ()) -> None:
        self._tokenizer = tokenizer
        self._stop = tuple(s for s in stop if s)
        self.token_ids: list[int] = []
        self.text = ""
        self.released = 0
        self.stopped = False

    def add(self, token_id: int) -> str:
        self.token_ids.append(token_id)
        text = self._tokenizer.decode(self.token_ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        self.text = text
        for stop in self._stop:
            at = text.find(stop, max(0, self.released - len(stop)))
            if at != -1:
                self.text = text[:at]
                self.stopped = True
                break
        return self._release(final=self.stopped)

    def finish(self) -> str:
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
        longest = 0
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(self.text)), longest, -1):
                if self.text.endswith(stop[:size]):
                    longest = size
                    break
        return longest


def per_token_seconds(assembler_class, tokenizer, ids: list[int], stop: tuple[str, ...]) -> tuple[float, float, str]:
    """Seconds per token over the whole output and over its last 100 tokens (with ``finish()``);
    the output's text. The last 100 alone are a short measurement, so seldom hit by other work."""
    gc.collect()  # start each run with the same garbage (none), so collections land alike
    start = time.perf_counter()
    assembler = assembler_class(tokenizer, stop)
    pieces = [assembler.add(token_id) for token_id in ids[:-LAST]]
    tail_start = time.perf_counter()
    pieces += [assembler.add(token_id) for token_id in ids[-LAST:]]
    pieces.append(assembler.finish())
    end = time.perf_counter()
    return (end - start) / len(ids), (end - tail_start) / LAST, "".join(pieces)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    text = DEMO_CORPUS.read_text()
    tokenizer = train_tokenizer(text)
    tokenizer.model_max_length = max(LENGTHS) * 2  # ids are cut from a long text: no length warning
    corpus_ids = tokenizer(text * 4).input_ids
    assert len(corpus_ids) >= max(LENGTHS)
    TextAssembler(tokenizer)  # find the tokenizer's traits once, as a worker does on its first request
    print(f"tokenizer: the demo's byte-level BPE ({len(tokenizer)} tokens); fastest of {args.repeats} runs")
    print("us/token: over the whole output | over its last 100 tokens")
    print(f"{'output':>12}  {'stop':>7}  {'old':>15}  {'new':>12}  {'old / new':>15}")
    cost: dict[tuple[str, int, str, str], float] = {}
    for stop_name, stop in STOPS.items():
        for length in LENGTHS:
            ids = corpus_ids[:length]
            runs: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
            for _ in range(args.repeats):
                for name, assembler_class in (("old", FullDecodeAssembler), ("new", TextAssembler)):
                    whole, last, out = per_token_seconds(assembler_class, tokenizer, ids, stop)
                    assert out == tokenizer.decode(ids, skip_special_tokens=True)
                    runs[name].append((whole, last))
            for name, pairs in runs.items():
                cost[name, length, stop_name, "whole"] = min(whole for whole, _ in pairs)
                cost[name, length, stop_name, "last"] = min(last for _, last in pairs)
            row = {
                name: (cost[name, length, stop_name, "whole"] * 1e6, cost[name, length, stop_name, "last"] * 1e6)
                for name in ("old", "new")
            }
            ratio = (row["old"][0] / row["new"][0], row["old"][1] / row["new"][1])
            print(
                f"{length:>6} tokens  {stop_name:>7}  {row['old'][0]:>6.1f} | {row['old'][1]:>6.1f}  "
                f"{row['new'][0]:>4.1f} | {row['new'][1]:>5.1f}  {ratio[0]:>5.1f}x | {ratio[1]:>5.1f}x"
            )
    short, long = LENGTHS
    for name in ("old", "new"):
        last = cost[name, long, "no stop", "last"] / cost[name, short, "no stop", "last"]
        whole = cost[name, long, "no stop", "whole"] / cost[name, short, "no stop", "whole"]
        print(
            f"{name}: per-token cost, {long:,}-token output / {short}-token output: {whole:.2f}x "
            f"(whole outputs), {last:.2f}x (their last {LAST} tokens)"
        )


if __name__ == "__main__":
    main()
