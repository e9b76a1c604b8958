"""Continuous batching over a causal LM's forward pass.

One scheduler thread owns the model. Requests join the running batch at token boundaries (their
prompts are prefilled in groups of similar length) and leave it the step they finish, so the batch
is never held back by its longest member. Every row has its own sampling parameters, seed, stop
sequences and length; a cancelled row leaves at the next step with the text it has.

Why not transformers' own continuous batching (``generate_batch``)? On this project's CPU
reference it reached about 3.6x a one-by-one ``generate`` with mixed lengths, and it lacks
per-request streaming callbacks and cancellation; this scheduler keeps a right-aligned,
preallocated KV cache (``BatchKVCache``) and runs close to a uniform static batch.

One request never fails the batch. After every forward pass each row's logits are checked: a row
with NaN or inf ends alone with ``FinishReason.ERROR``, keeping its text so far. A packed prefill
that produced any such row, and any forward pass that raised (CUDA out of memory included), is
run again one row at a time, so the fault lands on the row that causes it and on no other.

Out of memory (``torch.OutOfMemoryError``) is a fault of size, not of a row: the step that hit it
is run again in halves, down to one row, and the engine lowers its caps so that the next steps do
not hit it again: the running batch (no row is admitted while the batch holds as many, and a
batch above it decodes in parts of that size) and the prompt tokens packed in one prefill. After
``oom_recovery_steps`` decoding steps in a row without one, each cap grows back by an eighth of
its configured size. A row fails with out of memory only when it cannot run even alone.

Every request taken in ends. If the scheduler thread itself fails (an exception escaping its
loop, a bug in the bookkeeping included), every waiting and running request ends with ERROR,
``alive`` turns False, ``failure`` says why, and ``submit`` refuses new requests: the worker
around the engine watches ``alive`` and restarts rather than run on a scheduler it cannot trust.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import torch

from inference.engine.cache import BatchKVCache
from inference.engine.loading import LoadedModel
from inference.engine.sampling import RowSampler, choose_tokens
from inference.engine.text import TextAssembler
from inference.engine.types import EngineError, FinishReason, GenerationRequest, GenerationResult

logger = logging.getLogger(__name__)

# The ``error`` of a request that ended with FinishReason.ERROR; its user reads it.
ERROR_INVALID_NUMBERS = "the model produced invalid numbers (NaN/inf) for this request"
ERROR_FORWARD = "the model failed on this request ({})"  # what failed, e.g. "out of memory"
ERROR_STOPPED = "the engine stopped: {}"  # why the scheduler thread died


@dataclass
class _Row:
    request: GenerationRequest
    assembler: TextAssembler
    sampler: RowSampler
    start_column: int = 0  # first cache column holding this row's tokens
    length: int = 0  # tokens of this row in the cache
    last_token: int = 0
    generated: int = 0
    token_ids: list[int] = field(default_factory=list)  # every token chosen, end-of-sequence included
    first_token_at: float | None = None


class Engine:
    def __init__(
        self,
        loaded: LoadedModel,
        *,
        max_batch: int = 32,
        prefill_tokens_per_step: int = 1024,
        initial_capacity: int = 256,
        oom_recovery_steps: int = 64,
    ) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.device = loaded.device
        self.max_batch = max_batch
        self.prefill_tokens_per_step = prefill_tokens_per_step
        # Lowered after an out-of-memory error, grown back after oom_recovery_steps clean steps.
        self.oom_recovery_steps = oom_recovery_steps
        self._batch_cap = max_batch
        self._prefill_budget = prefill_tokens_per_step
        self._clean_steps = 0
        self.out_of_memory_errors = 0  # caught and survived: a count for logs and tests
        text_config = self.model.config.get_text_config()
        self._cache = BatchKVCache(
            num_layers=text_config.num_hidden_layers, max_rows=max_batch, capacity=initial_capacity
        )
        # Which tokens each row has seen (for the repetition penalty); sized at the first logits.
        self._seen: torch.Tensor | None = None
        self._eos = loaded.eos_token_ids
        self._pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self._rows: list[_Row] = []
        self._columns = 0  # the batch's aligned length: the next decode step writes this column
        self._waiting: deque[GenerationRequest] = deque()
        # Taken off the queue this turn and not yet rows: known, so that a dying loop ends them too.
        self._admitted: list[GenerationRequest] = []
        self._condition = threading.Condition()
        self._running = False
        self._failure: str | None = None
        self._thread: threading.Thread | None = None
        self._mask_min = torch.finfo(self.model.dtype if self.model.dtype.is_floating_point else torch.float32).min

    # --- public API ---------------------------------------------------------------------------

    def submit(self, request: GenerationRequest) -> GenerationRequest:
        prompt_tokens = len(request.prompt_ids)
        params = request.params
        if prompt_tokens == 0:
            raise EngineError("the prompt is empty")
        if params.max_new_tokens < 1:
            raise EngineError("max_new_tokens must be at least 1")
        if prompt_tokens + params.max_new_tokens > self.loaded.max_context:
            raise EngineError(
                f"prompt ({prompt_tokens} tokens) plus max_new_tokens ({params.max_new_tokens}) "
                f"exceeds the model's context of {self.loaded.max_context} tokens"
            )
        if not (math.isfinite(params.temperature) and math.isfinite(params.top_p)):
            raise EngineError("temperature and top_p must be finite numbers")
        if not (math.isfinite(params.repetition_penalty) and params.repetition_penalty > 0):
            raise EngineError("repetition_penalty must be a finite number above 0")
        with self._condition:
            if self._failure is not None:
                raise EngineError(ERROR_STOPPED.format(self._failure))
            if not self._running:
                raise EngineError("the engine is not running")
            request.submitted_at = time.perf_counter()
            self._waiting.append(request)
            self._condition.notify()
        return request

    def cancel(self, request_id: str, reason: FinishReason = FinishReason.CANCELLED) -> bool:
        """Stop a request at the next token boundary. True if the engine holds it."""
        with self._condition:
            for request in self._waiting:
                if request.request_id == request_id:
                    request.cancel(reason)
                    return True
            for row in self._rows:
                if row.request.request_id == request_id:
                    row.request.cancel(reason)
                    return True
        return False

    def start(self) -> Engine:
        with self._condition:
            if self._running:
                return self
            self._running = True
        self._thread = threading.Thread(target=self._loop, name="inkwell-engine", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._condition:
            self._running = False
            self._condition.notify()
        if self._thread is not None:
            self._thread.join()
        for row in list(self._rows):
            self._finish(row, FinishReason.CANCELLED)
        while self._waiting:
            self._finish_unstarted(self._waiting.popleft(), FinishReason.CANCELLED)

    @property
    def active(self) -> int:
        return len(self._rows) + len(self._waiting)

    @property
    def batch_cap(self) -> int:
        """The most rows decoded together now: ``max_batch``, or less after an out-of-memory error."""
        return self._batch_cap

    @property
    def prefill_budget(self) -> int:
        """The most prompt tokens packed in one prefill now (lowered after out of memory)."""
        return self._prefill_budget

    @property
    def alive(self) -> bool:
        """True while the scheduler thread runs and takes requests; False before ``start``, after
        ``stop``, and for good once the thread has died (``failure`` then says why)."""
        thread = self._thread
        return self._running and thread is not None and thread.is_alive()

    @property
    def failure(self) -> str | None:
        """Why the scheduler thread died; None while it lives or after a plain ``stop``."""
        return self._failure

    # --- the scheduler loop ---------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            with torch.inference_mode():
                while self._turn():
                    pass
        except BaseException as exc:  # whatever kills the loop must still end every request it holds
            self._die(exc)

    def _turn(self) -> bool:
        """Admit waiting requests, prefill them, decode one token for the batch. False once stopped.

        A forward pass's faults are handled inside (the row that causes one fails alone); any
        other exception escapes to ``_loop``, which ends everything: after a bug in the
        bookkeeping, rows, columns and cache can no longer be trusted to agree."""
        with self._condition:
            while self._running and not self._rows and not self._waiting:
                self._condition.wait()
            if not self._running:
                return False
            self._admitted = self._take_waiting()
        self._drop_cancelled()
        if self._admitted:
            self._prefill_groups(self._admitted)
            self._admitted = []
        if self._rows:
            self._decode_step()
        return True

    def _die(self, exc: BaseException) -> None:
        """The loop failed: refuse new work and end every request it held, with ERROR."""
        reason = _describe(exc)
        logger.critical("the engine stopped: %s", reason, exc_info=exc)
        with self._condition:
            self._failure = reason
            self._running = False
            waiting = list(self._waiting)
            self._waiting.clear()
        error = ERROR_STOPPED.format(reason)
        rows, self._rows = self._rows, []
        self._columns = 0
        for row in rows:
            if row.request.done.is_set():
                continue
            try:
                self._conclude(row, FinishReason.ERROR, error)  # keeps the text so far
            except Exception:
                logger.exception("could not end %s with its text", row.request.request_id)
                self._finish_unstarted(row.request, FinishReason.ERROR, error)
        for request in [*self._admitted, *waiting]:
            if not request.done.is_set():
                self._finish_unstarted(request, FinishReason.ERROR, error)
        self._admitted = []

    def _take_waiting(self) -> list[GenerationRequest]:
        taken: list[GenerationRequest] = []
        budget = self._prefill_budget
        while self._waiting and len(self._rows) + len(taken) < self._batch_cap:
            request = self._waiting[0]
            if taken and len(request.prompt_ids) > budget:
                break
            taken.append(self._waiting.popleft())
            budget -= len(request.prompt_ids)
        return taken

    def _drop_cancelled(self) -> None:
        for row in [r for r in self._rows if r.request.cancel_reason is not None]:
            self._finish(row, row.request.cancel_reason)

    # --- prefill ------------------------------------------------------------------------------

    def _prefill_groups(self, requests: list[GenerationRequest]) -> None:
        live = []
        for request in requests:
            if request.cancel_reason is not None:
                self._finish_unstarted(request, request.cancel_reason)
            else:
                live.append(request)
        group: list[GenerationRequest] = []
        tokens = 0
        for request in live:
            if group and tokens + len(request.prompt_ids) > self._prefill_budget:
                self._prefill(group)
                group, tokens = [], 0
            group.append(request)
            tokens += len(request.prompt_ids)
        if group:
            self._prefill(group)
        if not self._rows:
            self._columns = 0  # every prompt failed: no row needs the room made for them

    def _prefill(self, requests: list[GenerationRequest]) -> None:
        """Prefill a group as one packed sequence; after a fault, again one prompt at a time."""
        self._make_room(max(len(r.prompt_ids) for r in requests))
        try:
            logits = self._prefill_forward(requests)
        except torch.OutOfMemoryError as exc:
            if len(requests) == 1:
                self._note_out_of_memory(exc)
                self._fail_unstarted(requests[0], exc)
            else:
                self._prefill_in_halves(requests, exc)
            return
        except Exception as exc:
            if len(requests) == 1:
                self._fail_unstarted(requests[0], exc)
            else:
                logger.warning("a packed prefill of %d prompts failed (%s); one at a time now", len(requests), exc)
                _release_memory_after(exc)
                self._prefill_one_by_one(requests)
            return
        if len(requests) > 1 and not bool(torch.isfinite(logits.amax(dim=-1)).all()):
            # Packed prompts share each attention call, and a masked position still adds 0 * value:
            # one prompt's NaN turns the others' numbers to NaN as well. Alone, each shows its own.
            logger.warning("a packed prefill of %d prompts gave NaN/inf; one at a time now", len(requests))
            self._prefill_one_by_one(requests)
            return
        self._admit(requests, logits)

    def _prefill_in_halves(self, requests: list[GenerationRequest], exc: torch.OutOfMemoryError) -> None:
        """A packed prefill ran out of memory: pack half as many tokens from now on, and prefill
        this group again in two halves (each halved again should it still not fit)."""
        tokens = sum(len(r.prompt_ids) for r in requests)
        logger.warning(
            "a packed prefill of %d prompts (%d tokens) ran out of memory; in halves now", len(requests), tokens
        )
        self._note_out_of_memory(exc)
        self._prefill_budget = min(self._prefill_budget, max(1, tokens // 2))
        middle = len(requests) // 2
        self._prefill(requests[:middle])
        self._prefill(requests[middle:])

    def _prefill_one_by_one(self, requests: list[GenerationRequest]) -> None:
        for request in requests:
            # Again for each: a prompt that failed may have been the only row, and with it gone
            # the batch's columns went back to 0.
            self._make_room(len(request.prompt_ids))
            try:
                logits = self._prefill_forward([request])
            except Exception as exc:
                self._fail_unstarted(request, exc)
                continue
            self._admit([request], logits)

    def _make_room(self, longest: int) -> None:
        """Columns for a prompt of ``longest`` tokens, right-aligned with the running batch."""
        self._ensure_capacity(longest)
        if longest > self._columns:
            self._shift_right(longest - self._columns)

    def _prefill_forward(self, requests: list[GenerationRequest]) -> torch.Tensor:
        """Run prompts as one packed sequence (no padding): each prompt attends only to itself,
        restarts its positions at 0, and its keys and values land in the next free cache rows,
        right-aligned with the running batch. Returns each prompt's last logits."""
        first_row = len(self._rows)
        lengths = [len(r.prompt_ids) for r in requests]
        total = sum(lengths)
        input_ids = torch.tensor([[t for r in requests for t in r.prompt_ids]], dtype=torch.long)
        position_ids = torch.cat([torch.arange(n) for n in lengths])[None]
        segment = torch.repeat_interleave(torch.arange(len(requests)), torch.tensor(lengths))
        index = torch.arange(total)
        allowed = (segment[:, None] == segment[None, :]) & (index[None, :] <= index[:, None])
        mask = self._additive_mask(allowed[None, None])
        segments, last_positions, offset = [], [], 0
        for i, n in enumerate(lengths):
            segments.append((first_row + i, offset, offset + n, self._columns - n))
            offset += n
            last_positions.append(offset - 1)
        self._cache.set_window(rows=(first_row, first_row + 1), write=(0, total), read_start=0)
        self._cache.set_segments(segments)
        return self.model(
            input_ids=input_ids.to(self.device),
            attention_mask=mask,
            position_ids=position_ids.to(self.device),
            cache=self._cache,
            use_cache=True,
            logits_to_keep=torch.tensor(last_positions, device=self.device),
        ).logits[0]

    def _admit(self, requests: list[GenerationRequest], logits: torch.Tensor) -> None:
        """Prefilled prompts become rows (in the cache rows their prefill wrote) and take their
        first token."""
        if self._seen is None:
            self._seen = torch.zeros((self.max_batch, logits.shape[-1]), dtype=torch.bool, device=self.device)
        first_row = len(self._rows)
        rows = []
        for i, request in enumerate(requests):
            length = len(request.prompt_ids)
            row = _Row(
                request=request,
                assembler=TextAssembler(self.tokenizer, request.params.stop),
                sampler=RowSampler(request.params, self.device),
                start_column=self._columns - length,
                length=length,
            )
            slot = first_row + i
            self._seen[slot].zero_()
            self._seen[slot, torch.tensor(request.prompt_ids, device=self.device)] = True
            self._rows.append(row)
            rows.append(row)
        self._accept(rows, logits, first_row)

    def _fail_unstarted(self, request: GenerationRequest, exc: Exception) -> None:
        logger.error("prefill failed for %s", request.request_id, exc_info=exc)
        _release_memory_after(exc)
        self._finish_unstarted(request, FinishReason.ERROR, ERROR_FORWARD.format(_describe(exc)))

    # --- decode -------------------------------------------------------------------------------

    def _decode_step(self) -> None:
        """One token for every row: in one pass, or in parts of ``batch_cap`` rows after an
        out-of-memory error.

        A part that fails may have written this step's column already (for some layers and rows).
        Each retry writes that same column at every layer before it reads it, and no length or
        column count moves until every part has run, so nothing stale is read."""
        self._ensure_capacity()
        errors_before = self.out_of_memory_errors
        pieces: list[torch.Tensor] = []
        errors: list[str] = []
        start = 0
        while start < len(self._rows):
            end = min(start + self._batch_cap, len(self._rows))
            part_logits, part_errors = self._decode_part(start, end)
            pieces.append(part_logits)
            errors.extend(part_errors)
            start = end
        logits = pieces[0] if len(pieces) == 1 else torch.cat([p.float() for p in pieces])
        self._columns += 1
        for row in self._rows:
            row.length += 1
        self._accept(list(self._rows), logits, 0, errors if any(errors) else None)
        if self.out_of_memory_errors == errors_before:
            self._after_clean_step()

    def _decode_part(self, start: int, end: int) -> tuple[torch.Tensor, list[str]]:
        """Decode rows ``start..end``. Out of memory: lower the cap and run the two halves (each
        halved again should it still not fit); a row alone that runs out fails. Any other fault:
        each row alone, so that only a row failing alone fails. Returns the logits (zeros for a
        row that failed) and each row's error ("" for none)."""
        try:
            return self._decode_forward(start, end), [""] * (end - start)
        except torch.OutOfMemoryError as exc:
            self._note_out_of_memory(exc)
            if end - start == 1:
                return self._decode_failed(start, [exc])
            logger.warning("a decoding step of %d rows ran out of memory; in halves now", end - start)
            half = (end - start + 1) // 2  # the larger half: a part this size runs next
            self._batch_cap = min(self._batch_cap, half)
            middle = start + half
            first, first_errors = self._decode_part(start, middle)
            second, second_errors = self._decode_part(middle, end)
            return torch.cat([first.float(), second.float()]), first_errors + second_errors
        except Exception as exc:
            if end - start == 1:
                return self._decode_failed(start, [exc])  # alone already: it would fail the same way
            logger.warning("a decoding step of %d rows failed (%s); one row at a time now", end - start, exc)
            return self._decode_one_by_one(start, end)

    def _decode_one_by_one(self, start: int, end: int) -> tuple[torch.Tensor, list[str]]:
        results: list[torch.Tensor | Exception] = []
        for slot in range(start, end):
            try:
                results.append(self._decode_forward(slot, slot + 1).float())
            except Exception as exc:
                _release_memory_after(exc)
                results.append(exc)
        return self._decode_failed(start, results)

    def _decode_failed(self, start: int, results: list[torch.Tensor | Exception]) -> tuple[torch.Tensor, list[str]]:
        """Logits and errors for rows from ``start`` on, from each row's result: its logits, or the
        exception its pass raised alone (that row then gets zeros and an error)."""
        placeholder = torch.zeros((1, self._seen.shape[-1]), dtype=torch.float32, device=self.device)
        pieces, errors = [], []
        for row, result in zip(self._rows[start : start + len(results)], results, strict=True):
            if isinstance(result, Exception):
                logger.error("decoding failed for %s", row.request.request_id, exc_info=result)
                pieces.append(placeholder)
                errors.append(ERROR_FORWARD.format(_describe(result)))
            else:
                pieces.append(result)
                errors.append("")
        return torch.cat(pieces), errors

    def _note_out_of_memory(self, exc: torch.OutOfMemoryError) -> None:
        _release_memory_after(exc)
        self.out_of_memory_errors += 1
        self._clean_steps = 0

    def _after_clean_step(self) -> None:
        """Grow the caps back, an eighth of their configured size every oom_recovery_steps clean
        steps: slowly, since memory that ran out once may run out again."""
        if self._batch_cap == self.max_batch and self._prefill_budget == self.prefill_tokens_per_step:
            return
        self._clean_steps += 1
        if self._clean_steps < self.oom_recovery_steps:
            return
        self._clean_steps = 0
        self._batch_cap = min(self.max_batch, self._batch_cap + max(1, self.max_batch // 8))
        self._prefill_budget = min(
            self.prefill_tokens_per_step, self._prefill_budget + max(1, self.prefill_tokens_per_step // 8)
        )
        logger.info(
            "caps after out of memory grow back: %d rows, %d prefill tokens", self._batch_cap, self._prefill_budget
        )

    def _decode_forward(self, row_start: int, row_end: int) -> torch.Tensor:
        """One decoding step for rows ``row_start..row_end``; writes column ``self._columns``."""
        rows = self._rows[row_start:row_end]
        read_start = min(r.start_column for r in rows)
        input_ids = torch.tensor([[r.last_token] for r in rows], dtype=torch.long, device=self.device)
        position_ids = torch.tensor([[r.length] for r in rows], dtype=torch.long, device=self.device)
        starts = torch.tensor([r.start_column for r in rows], dtype=torch.long)
        keys = torch.arange(read_start, self._columns + 1)
        allowed = keys[None, :] >= starts[:, None]
        mask = self._additive_mask(allowed[:, None, None, :])
        self._cache.set_window(
            rows=(row_start, row_end), write=(self._columns, self._columns + 1), read_start=read_start
        )
        return self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=position_ids,
            cache=self._cache,
            use_cache=True,
        ).logits[:, -1, :]

    def _accept(self, rows: list[_Row], logits: torch.Tensor, first_slot: int, errors: list[str] | None = None) -> None:
        """Choose the next token of each row, stream its text, and retire the rows that finished.

        A row with an error (its forward pass failed alone) or with no usable token (NaN/inf)
        ends with ERROR, keeping the tokens it had; the other rows go on."""
        samplers = [r.sampler for r in rows]
        penalise = any(r.request.params.repetition_penalty != 1.0 for r in rows)
        seen = self._seen[first_slot : first_slot + len(rows)] if penalise else None
        tokens = choose_tokens(logits.float(), samplers, seen)
        now = time.perf_counter()
        finished: list[tuple[_Row, FinishReason, str]] = []
        for offset, (row, token) in enumerate(zip(rows, tokens, strict=True)):
            error = errors[offset] if errors else ""
            if not error and token is None:
                logger.warning("request %s: NaN/inf in the model's numbers", row.request.request_id)
                error = ERROR_INVALID_NUMBERS
            if error:
                finished.append((row, FinishReason.ERROR, error))
                continue
            row.last_token = token
            row.generated += 1
            row.token_ids.append(token)
            if row.first_token_at is None:
                row.first_token_at = now
            self._seen[first_slot + offset, token] = True
            reason = None
            if token in self._eos and not row.request.params.ignore_eos:
                reason = FinishReason.STOP
            else:
                piece = row.assembler.add(token)
                if piece:
                    self._emit(row, piece)
                if row.assembler.stopped:
                    reason = FinishReason.STOP
            if reason is None and row.generated >= row.request.params.max_new_tokens:
                reason = FinishReason.LENGTH
            if reason is None and row.request.cancel_reason is not None:
                reason = row.request.cancel_reason
            if reason is not None:
                finished.append((row, reason, ""))
        for row, reason, error in finished:
            self._finish(row, reason, error)

    # --- rows and columns -----------------------------------------------------------------------

    def _finish(self, row: _Row, reason: FinishReason, error: str = "") -> None:
        self._conclude(row, reason, error)
        slot = self._rows.index(row)
        last = len(self._rows) - 1
        if slot != last:
            # Keep rows packed: the last row takes the finished row's place.
            self._cache.move_row(last, slot, self._columns)
            self._seen[slot] = self._seen[last]
            self._rows[slot] = self._rows[last]
        self._rows.pop()
        if not self._rows:
            self._columns = 0

    def _conclude(self, row: _Row, reason: FinishReason, error: str = "") -> None:
        """Give the row's request its result and wake its waiter (the cache is not touched)."""
        piece = row.assembler.finish()
        if piece:
            self._emit(row, piece)
        now = time.perf_counter()
        row.request.result = GenerationResult(
            text=row.assembler.text,
            prompt_tokens=len(row.request.prompt_ids),
            completion_tokens=row.generated,
            finish_reason=reason,
            error=error,
            token_ids=list(row.token_ids),
            time_to_first_token=(row.first_token_at - row.request.submitted_at) if row.first_token_at else None,
            generation_seconds=now - row.request.submitted_at,
        )
        row.request.done.set()

    def _finish_unstarted(self, request: GenerationRequest, reason: FinishReason, error: str = "") -> None:
        request.result = GenerationResult(
            text="", prompt_tokens=len(request.prompt_ids), completion_tokens=0, finish_reason=reason, error=error
        )
        request.done.set()

    def _emit(self, row: _Row, piece: str) -> None:
        if row.request.on_text is None:
            return
        try:
            row.request.on_text(piece)
        except Exception:  # a listener's failure must not stop the batch
            logger.exception("on_text callback failed for %s", row.request.request_id)

    def _shift_right(self, by: int) -> None:
        """Make room on the left for a longer prompt: every running row moves right by ``by``."""
        if self._rows and self._columns:
            self._cache.shift_columns(len(self._rows), 0, self._columns, by)
        for row in self._rows:
            row.start_column += by
        self._columns += by

    def _ensure_capacity(self, min_columns: int = 0) -> None:
        """Room for one more column after ``max(columns, min_columns)``: first drop the columns no
        running row uses any more, then grow the buffer (doubling) if that is not enough."""

        def needed() -> int:
            return max(self._columns, min_columns) + 1

        if needed() <= self._cache.capacity:
            return
        if self._rows:
            unused = min(r.start_column for r in self._rows)
            if unused:
                self._cache.shift_columns(len(self._rows), unused, self._columns, 0)
                for row in self._rows:
                    row.start_column -= unused
                self._columns -= unused
        if needed() > self._cache.capacity:
            capacity = self._cache.capacity
            while capacity < needed():
                capacity *= 2
            self._cache.grow(capacity)

    def _additive_mask(self, allowed: torch.Tensor) -> torch.Tensor:
        dtype = self.model.dtype if self.model.dtype.is_floating_point else torch.float32
        mask = torch.zeros(allowed.shape, dtype=dtype)
        mask.masked_fill_(~allowed, self._mask_min)
        return mask.to(self.device)


def _describe(exc: BaseException) -> str:
    """A short account of a fault for the user-facing error: its type and first line."""
    if isinstance(exc, torch.OutOfMemoryError):
        return "out of memory"
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text[:300]


def _release_memory_after(exc: BaseException) -> None:
    # After a CUDA out-of-memory error, hand the allocator's cached blocks back before a retry.
    if isinstance(exc, torch.OutOfMemoryError) and torch.cuda.is_available():
        torch.cuda.empty_cache()
