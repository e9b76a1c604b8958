"""Next-token choice for a whole batch, each row with its own sampling parameters.

The order of the logits processors follows transformers' ``generate``: repetition penalty, then
temperature, top-k and top-p; greedy rows take the arg-max of the penalised logits.
"""

from __future__ import annotations

import torch

from inference.engine.types import SamplingParams


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
) -> list[int]:
    """Pick one token for every row of ``logits`` ([rows, vocab], float32)."""
    rows = logits.shape[0]
    if seen is not None:
        penalties = torch.tensor([s.params.repetition_penalty for s in samplers], device=logits.device)
        logits = apply_repetition_penalty(logits, seen[:rows], penalties)
    chosen = torch.argmax(logits, dim=-1)
    sampling_rows = [i for i, s in enumerate(samplers) if not s.params.greedy]
    if not sampling_rows:
        return chosen.tolist()
    index = torch.tensor(sampling_rows, device=logits.device)
    sub = logits.index_select(0, index)
    temperatures = torch.tensor([samplers[i].params.temperature for i in sampling_rows], device=logits.device)
    sub = sub / temperatures[:, None]
    needs_filter = any(samplers[i].params.top_k > 0 or samplers[i].params.top_p < 1.0 for i in sampling_rows)
    if needs_filter:
        sorted_logits, sorted_index = torch.sort(sub, dim=-1, descending=True)
        ranks = torch.arange(sub.shape[-1], device=logits.device)[None, :]
        top_k = torch.tensor([samplers[i].params.top_k or sub.shape[-1] for i in sampling_rows], device=logits.device)
        remove = ranks >= top_k[:, None]
        top_p = torch.tensor([samplers[i].params.top_p for i in sampling_rows], device=logits.device)
        probs = torch.softmax(sorted_logits.masked_fill(remove, float("-inf")), dim=-1)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        mass_before = torch.cumsum(probs, dim=-1) - probs
        remove |= mass_before > top_p[:, None]
        sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
        sub = torch.full_like(sub, float("-inf")).scatter(-1, sorted_index, sorted_logits)
    probs = torch.softmax(sub, dim=-1)
    result = chosen.tolist()
    for position, row in enumerate(sampling_rows):
        token = torch.multinomial(probs[position], 1, generator=samplers[row].generator)
        result[row] = int(token.item())
    return result
