"""A preallocated, right-aligned KV cache for a batch whose rows come and go.

Every row's tokens end at the same column, so one decoding step writes one column for the whole
batch in place: no per-step copy of the cache (transformers' DynamicCache concatenates, which
copies every layer's keys and values each step). Shorter rows are left-padded; a per-row start
column says where a row's real tokens begin, and the attention mask hides the rest.

Rows are packed at the top of the buffer (rows ``0..rows-1``); a finished row is replaced by the
last one, so a step always works on one contiguous slice.

Every column a row reads holds its own keys and values or zeros. The mask hides padding, but a
hidden position still takes part in the attention sums (its score plus a large negative number,
its value times a zero weight), and with NaN there (left in a slot by a request whose numbers
went bad) the result is NaN. So padding is cleared when a row is placed and when rows shift right.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


class _Window:
    """Which rows and columns the next forward pass reads and writes (shared by all layers).

    Decoding works on a block: rows ``row_start..row_end``, writing columns
    ``write_start..write_end`` and attending to ``read_start..write_end``. A packed prefill
    (several prompts in one sequence) instead lists ``segments``: each
    ``(row, source_start, source_end, column)`` copies part of the packed keys and values into a
    row, and attention runs on the packed sequence itself.
    """

    def __init__(self) -> None:
        self.row_start = 0
        self.row_end = 0
        self.write_start = 0
        self.write_end = 0
        self.read_start = 0
        self.segments: list[tuple[int, int, int, int]] = []


class _SlotLayer(CacheLayerMixin):
    def __init__(self, cache: BatchKVCache) -> None:
        super().__init__()
        self._cache = cache

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.keys = torch.zeros(
            (self._cache.max_rows, key_states.shape[1], self._cache.capacity, key_states.shape[3]),
            dtype=key_states.dtype,
            device=key_states.device,
        )
        self.values = torch.zeros(
            (self._cache.max_rows, value_states.shape[1], self._cache.capacity, value_states.shape[3]),
            dtype=value_states.dtype,
            device=value_states.device,
        )
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        w = self._cache.window
        if w.segments:
            for row, source_start, source_end, column in w.segments:
                end = column + source_end - source_start
                # The columns left of a new row are its padding, which must not hold NaN (see the
                # module's doc); a request that failed in this slot may have left some there.
                self.keys[row, :, :column] = 0
                self.values[row, :, :column] = 0
                self.keys[row, :, column:end] = key_states[0, :, source_start:source_end]
                self.values[row, :, column:end] = value_states[0, :, source_start:source_end]
            return key_states, value_states
        self.keys[w.row_start : w.row_end, :, w.write_start : w.write_end] = key_states
        self.values[w.row_start : w.row_end, :, w.write_start : w.write_end] = value_states
        return (
            self.keys[w.row_start : w.row_end, :, w.read_start : w.write_end],
            self.values[w.row_start : w.row_end, :, w.read_start : w.write_end],
        )

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        w = self._cache.window
        if w.segments:
            return query_length, 0
        return w.write_end - w.read_start, 0

    def get_seq_length(self) -> int:
        return self._cache.window.write_start

    def get_max_length(self) -> int:
        return self._cache.capacity

    # Row and column housekeeping, applied to this layer's buffers.
    def move_row(self, src: int, dst: int, columns: int) -> None:
        if self.is_initialized:
            self.keys[dst, :, :columns] = self.keys[src, :, :columns]
            self.values[dst, :, :columns] = self.values[src, :, :columns]

    def shift_columns(self, rows: int, src_start: int, src_end: int, dst_start: int) -> None:
        if self.is_initialized:
            length = src_end - src_start
            self.keys[:rows, :, dst_start : dst_start + length] = self.keys[:rows, :, src_start:src_end].clone()
            self.values[:rows, :, dst_start : dst_start + length] = self.values[:rows, :, src_start:src_end].clone()
            if dst_start > src_start:
                # Shifted right: the columns left behind become these rows' padding, and may hold
                # whatever the slot held before, NaN included; cleared like new padding.
                self.keys[:rows, :, src_start:dst_start] = 0
                self.values[:rows, :, src_start:dst_start] = 0

    def grown(self, capacity: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """This layer's keys and values copied into buffers of ``capacity`` columns (not yet used)."""
        if not self.is_initialized:
            return None
        buffers = []
        for old in (self.keys, self.values):
            new = torch.zeros((*old.shape[:2], capacity, old.shape[3]), dtype=old.dtype, device=old.device)
            new[:, :, : old.shape[2]] = old
            buffers.append(new)
        return buffers[0], buffers[1]


class BatchKVCache(Cache):
    """The KV cache of the engine's running batch. The scheduler moves the window; layers obey it."""

    def __init__(self, *, num_layers: int, max_rows: int, capacity: int) -> None:
        self.max_rows = max_rows
        self.capacity = capacity
        self.window = _Window()
        super().__init__(layers=[_SlotLayer(self) for _ in range(num_layers)])

    def set_window(self, *, rows: tuple[int, int], write: tuple[int, int], read_start: int) -> None:
        w = self.window
        w.row_start, w.row_end = rows
        w.write_start, w.write_end = write
        w.read_start = read_start
        w.segments = []

    def set_segments(self, segments: list[tuple[int, int, int, int]]) -> None:
        self.window.segments = segments

    def move_row(self, src: int, dst: int, columns: int) -> None:
        for layer in self.layers:
            layer.move_row(src, dst, columns)

    def shift_columns(self, rows: int, src_start: int, src_end: int, dst_start: int) -> None:
        for layer in self.layers:
            layer.shift_columns(rows, src_start, src_end, dst_start)

    def grow(self, capacity: int) -> None:
        # Allocate every layer's new buffers before swapping any: an out-of-memory error halfway
        # then leaves the cache as it was, not with layers of different sizes.
        grown = [layer.grown(capacity) for layer in self.layers]
        for layer, buffers in zip(self.layers, grown, strict=True):
            if buffers is not None:
                layer.keys, layer.values = buffers
        self.capacity = capacity
