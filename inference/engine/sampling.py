"""Next-token choice for a whole batch, each row with its own sampling parameters.

The order of the logits processors follows transformers' ``generate``: repetition penalty, then
temperature, top-k and top-p; greedy rows take the arg-max of the penalised logits.

One row never fails the others: a row whose logits hold NaN or +inf (or are all -inf), or whose
parameters leave no token that can be drawn, gets ``None`` instead of a token, and the scheduler
ends that row alone.
A temperature below ``MIN_TEMPERATURE`` is greedy (see ``SamplingParams``).
"""

from __future__ import annotations

import torch

from inference.engine.types import MIN_TEMPERATURE, SamplingParams

__all__ = ["MIN_TEMPERATURE", "RowSampler", "apply_repetition_penalty", "choose_tokens"]


class RowSampler:
    """Per-row state: parameters, the seeded generator, and which tokens the row has seen."""

    def __init__(self, params: SamplingParams, device: torch.device) -> None:
        self.params = params
        self.generator: torch.Generator | None = None
        if not params.greedy:
            self.generator = torch.Generator(device=device)
            if params.seed is not None:
                self.generator.manual_seed(params.seed)
            else:
                self.generator.seed()


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalties: torch.Tensor) -> torch.Tensor:
    """Divide positive logits of seen tokens by the penalty and multiply negative ones (as HF does)."""
    penalised = torch.where(logits > 0, logits / penalties[:, None], logits * penalties[:, None])
    return torch.where(seen, penalised, logits)


def choose_tokens(
    logits: torch.Tensor,
    samplers: list[RowSampler],
    seen: torch.Tensor | None,
) -> list[int | None]:
    """Pick one token for every row of ``logits`` ([rows, vocab], float32); ``None`` for a row
    whose numbers are not usable (a NaN or +inf logit, all -inf, or no token left to draw)."""
    rows = logits.shape[0]
    # The per-row NaN/inf guard, at no extra pass over the vocabulary: a row's maximum is NaN if
    # any of its logits is NaN (max propagates NaN), +inf if one is +inf, -inf if all are -inf.
    # It is judged on the model's own numbers, before any penalty.
    best, chosen = logits.max(dim=-1)  # like argmax, the first of equal maxima
    usable = torch.isfinite(best)
    if seen is not None:
        penalties = torch.tensor([s.params.repetition_penalty for s in samplers], device=logits.device)
        logits = apply_repetition_penalty(logits, seen[:rows], penalties)
        chosen = torch.argmax(logits, dim=-1)
    # -1 marks an unusable row; folded into the choice, it costs no second device-to-host copy.
    chosen = torch.where(usable, chosen, -1)
    sampling_rows = [i for i, s in enumerate(samplers) if not s.params.greedy]
    result: list[int | None] = [None if token < 0 else token for token in chosen.tolist()]
    if not sampling_rows:
        return result
    index = torch.tensor(sampling_rows, device=logits.device)
    sub = logits.index_select(0, index)
    temperatures = torch.tensor([samplers[i].params.temperature for i in sampling_rows], device=logits.device)
    sub = sub / temperatures[:, None]
    needs_filter = any(samplers[i].params.top_k > 0 or samplers[i].params.top_p < 1.0 for i in sampling_rows)
    if needs_filter:
        sorted_logits, sorted_index = torch.sort(sub, dim=-1, descending=True)
        ranks = torch.arange(sub.shape[-1], device=logits.device)[None, :]
        top_k = torch.tensor(
            [samplers[i].params.top_k if samplers[i].params.top_k > 0 else sub.shape[-1] for i in sampling_rows],
            device=logits.device,
        )
        remove = ranks >= top_k[:, None]
        top_p = torch.tensor([samplers[i].params.top_p for i in sampling_rows], device=logits.device)
        probs = torch.softmax(sorted_logits.masked_fill(remove, float("-inf")), dim=-1)
        # Keep the smallest prefix whose mass reaches top_p.
        mass_before = torch.cumsum(probs, dim=-1) - probs
        remove |= mass_before > top_p[:, None]
        # The most likely token always stays, so no top_p or top_k can leave a row nothing to draw.
        remove[:, 0] = False
        sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
        sub = torch.full_like(sub, float("-inf")).scatter(-1, sorted_index, sorted_logits)
    # multinomial fails on a row of NaN, inf or zeros (on CUDA with a device-side assert that ends
    # the process), so rows are checked first: with a finite maximum, the softmax is well defined.
    drawable = torch.isfinite(sub.amax(dim=-1)).tolist()
    probs = torch.softmax(sub, dim=-1)
    for position, row in enumerate(sampling_rows):
        if result[row] is None or not drawable[position]:
            result[row] = None
            continue
        token = torch.multinomial(probs[position], 1, generator=samplers[row].generator)
        result[row] = int(token.item())
    return result
