"""Decoding attention that reads each group of rows from its own first column.

The batch's KV cache is right-aligned (``cache.py``): a row of 40 tokens and a row of 900 end at
the same column, and one dense attention call over the batch reads all 900 columns for both, the
short row's padding included. On a CPU a decoding step's attention is bound by memory bandwidth
(each step reads every cached key and value once), so with mixed lengths a large share of the
step went to reading padding: at 32 rows of 8-512 prompt tokens, about 40 % of what attention
read, and attention was about 45 % of the step.

Here the rows of a decoding step are cut into a few contiguous groups (``chunk_plan``), and each
group's attention starts at the first column any of its rows uses. The scheduler keeps rows
roughly sorted by length (``Engine._sort_rows``), so that long rows share groups with long rows.
A few groups, not one call per row: each call costs a fixed overhead in every layer, and per-row
calls measured slower than one padded call.

The function is registered with transformers as attention implementation ``inkwell_chunked`` and
falls back to transformers' SDPA whenever a call carries no plan (prefill, ``generate``, any other
caller of the model), so a model switched to it computes exactly what SDPA computes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

IMPLEMENTATION = "inkwell_chunked"
CHUNK_MIN_ROWS = 8  # fewer rows than this in a step: one call (the overhead would outweigh the gain)
CHUNK_MAX = 4  # the most groups a step is cut into

# (first row, end row, first column relative to the step's first column); rows relative to the step.
Chunk = tuple[int, int, int]


def chunked_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    inkwell_chunks: Sequence[Chunk] | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    if not inkwell_chunks or attention_mask is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    outputs = [
        sdpa_attention_forward(
            module,
            query[first:end],
            key[first:end, :, column:],
            value[first:end, :, column:],
            attention_mask[first:end, :, :, column:],
            **kwargs,
        )[0]
        for first, end, column in inkwell_chunks
    ]
    return torch.cat(outputs), None


AttentionInterface.register(IMPLEMENTATION, chunked_attention)
# The masks transformers builds for this implementation (generate's 2D padding masks) are SDPA's.
AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)


def use_chunked_attention(model: torch.nn.Module) -> bool:
    """Switch a model from SDPA to the chunked attention; True if it now uses it. Models on other
    implementations (eager, flash) keep theirs."""
    if model.config._attn_implementation == IMPLEMENTATION:
        return True
    if model.config._attn_implementation != "sdpa":
        return False
    model.set_attn_implementation(IMPLEMENTATION)
    return True


def chunk_plan(starts: Sequence[int]) -> list[Chunk]:
    """Cut rows (their first columns, in the order they lie in the cache) into contiguous groups.

    Groups hold ``max(CHUNK_MIN_ROWS, ceil(rows / CHUNK_MAX))`` rows; each starts at its rows'
    earliest column, given relative to the earliest of all. An empty plan means one call: too few
    rows, or no group would start later than the first column."""
    rows = len(starts)
    if rows < 2 * CHUNK_MIN_ROWS:
        return []
    size = max(CHUNK_MIN_ROWS, -(-rows // CHUNK_MAX))
    base = min(starts)
    plan = [
        (first, min(first + size, rows), min(starts[first : first + size]) - base) for first in range(0, rows, size)
    ]
    return plan if any(column for _, _, column in plan) else []


def columns_read(starts: Sequence[int], end: int, plan: Sequence[Chunk]) -> int:
    """Row-columns of keys and values a step reads with ``plan`` (each layer reads this many)."""
    if not plan:
        return len(starts) * (end - min(starts))
    base = min(starts)
    return sum((last - first) * (end - base - column) for first, last, column in plan)
