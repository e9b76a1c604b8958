"""Quality of each precision option on a trained model, against float32, side by side in one run.

Usage:  .venv/bin/python bench/quality.py [--model PATH] [--new-tokens 32] [--every 8] [--options ...]

The model is the demo model's size (4 layers, 256 wide) trained like it, but kept off every sixth
paragraph of the shipped corpus (``build_demo_model(held_out=True)``; built on first use, then
reused): those paragraphs are text it has never seen. Prompts are their prefixes, one
every ``--every`` tokens. For each option that runs on this CPU:
  greedy agreement  float32 writes ``--new-tokens`` tokens greedily from each prompt (end of text
                    ignored); the share of those positions where the option, given the same text
                    so far, picks the same next token (one divergence does not count twice)
  identical         prompts whose whole greedy continuation, written by the option itself, equals
                    float32's
  perplexity        on the held-out paragraphs, and on the trained ones for scale
  memory            parameter and buffer bytes as stored (torchao's packed data, scales and zero
                    points included). Not the process's RSS growth: float32 weights stay mapped from
                    the safetensors file, so RSS does not measure a model cleanly (it grew 2 MiB for
                    a second 14 MiB float32 copy, 17 MiB for a 5 MiB int8 one).
Targets: greedy agreement >= 95 % for bfloat16 and int8.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py is named like the standard library's queue module: keep this folder off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import math
import time
from dataclasses import dataclass

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from inference.engine import (
    LoadedModel,
    ModelSpec,
    build_demo_model,
    demo_corpus_split,
    load_model,
    model_bytes,
    precisions_on,
)

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "var" / "models" / "quality-demo"
TARGETS = {"bfloat16": 0.95, "int8": 0.95}


@dataclass
class Row:
    option: str
    agreement: float
    identical: int
    perplexity_held_out: float
    perplexity_trained: float
    bytes: int


def load(path: str, option: str) -> LoadedModel:
    return load_model(ModelSpec("quality", path, dtype=option, device="cpu"))


def prompts_from(tokenizer, paragraphs: list[str], every: int) -> list[list[int]]:
    prompts = []
    for paragraph in paragraphs:
        ids = tokenizer(paragraph).input_ids
        prompts += [ids[:end] for end in range(every, len(ids), every)]
    return prompts


def greedy(loaded: LoadedModel, prompt: list[int], new_tokens: int) -> list[int]:
    ids = torch.tensor([prompt])
    out = loaded.model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,  # end of text ignored: every prompt is compared at full length
        do_sample=False,
        pad_token_id=loaded.tokenizer.eos_token_id,
    )
    return out[0, len(prompt) :].tolist()


def next_token_choices(loaded: LoadedModel, prompt: list[int], continuation: list[int]) -> list[int]:
    """The option's greedy pick at each position of ``continuation``, given the text before it."""
    ids = torch.tensor([prompt + continuation])
    logits = loaded.model(ids).logits[0, len(prompt) - 1 : -1]
    return logits.argmax(-1).tolist()


def perplexity(loaded: LoadedModel, paragraphs: list[str]) -> float:
    eos = loaded.tokenizer.eos_token_id
    total_loss, total_tokens = 0.0, 0
    for paragraph in paragraphs:
        ids = torch.tensor([[eos, *loaded.tokenizer(paragraph).input_ids]])
        loss = loaded.model(ids, labels=ids).loss.item()
        total_loss += loss * (ids.shape[1] - 1)
        total_tokens += ids.shape[1] - 1
    return math.exp(total_loss / total_tokens)


def measure(path: str, option: str, prompts, references, trained, held_out) -> Row:
    loaded = load(path, option)
    with torch.inference_mode():
        agreeing = identical = 0
        for prompt, reference in zip(prompts, references, strict=True):
            choices = next_token_choices(loaded, prompt, reference)
            agreeing += sum(a == b for a, b in zip(choices, reference, strict=True))
            identical += greedy(loaded, prompt, len(reference)) == reference
        positions = sum(len(r) for r in references)
        return Row(
            option,
            agreeing / positions,
            identical,
            perplexity(loaded, held_out),
            perplexity(loaded, trained),
            model_bytes(loaded.model),
        )


def verdict(row: Row) -> str:
    if row.option == "float32":
        return "reference"
    target = TARGETS.get(row.option)
    if target is None:
        return ""
    return f">= {target:.0%}: {'met' if row.agreement >= target else 'NOT met'}"


def print_table(rows: list[Row], prompts: int) -> None:
    mib = 2**20
    print(
        f"{'option':<13}{'greedy agreement':>17}{'identical':>11}{'PPL held-out':>14}{'PPL trained':>13}"
        f"{'params+buffers':>22}  target"
    )
    reference = rows[0]
    for row in rows:
        size = f"{row.bytes / mib:.2f} MiB ({row.bytes / reference.bytes:.2f}x)"
        print(
            f"{row.option:<13}{row.agreement:>16.1%}{row.identical:>6}/{prompts:<4}{row.perplexity_held_out:>14.2f}"
            f"{row.perplexity_trained:>13.2f}{size:>22}  {verdict(row)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--every", type=int, default=8, help="a prompt every N tokens of held-out text")
    parser.add_argument("--options", default="", help="comma-separated; default: every option this CPU runs")
    args = parser.parse_args()
    if not (Path(args.model) / "config.json").exists():
        print(f"building the held-out demo model in {args.model} ...", flush=True)
        started = time.perf_counter()
        build_demo_model(args.model, size="demo", held_out=True)
        print(f"built in {time.perf_counter() - started:.0f} s", flush=True)
    cpu = torch.device("cpu")
    options = [o for o in args.options.split(",") if o] or [o for o in precisions_on(cpu) if o != "float32"]
    trained, held_out = demo_corpus_split()
    torch.manual_seed(0)
    reference = load(args.model, "float32")
    prompts = prompts_from(reference.tokenizer, held_out, args.every)
    with torch.inference_mode():
        references = [greedy(reference, prompt, args.new_tokens) for prompt in prompts]
    params = sum(p.numel() for p in reference.model.parameters()) / 1e6
    held_tokens = sum(len(reference.tokenizer(p).input_ids) for p in held_out)
    has_amx = torch.cpu.get_capabilities().get("amx_bf16", False)
    print(
        f"model: {Path(args.model).name} ({params:.1f}M parameters; trained on {len(trained)} paragraphs, "
        f"{len(held_out)} held out = {held_tokens} tokens); torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, AMX bf16: {'yes' if has_amx else 'no'}"
    )
    print(
        f"{len(prompts)} prompts (held-out prefixes every {args.every} tokens), {args.new_tokens} greedy tokens "
        f"each; every option measured in this one run\n"
    )
    rows = [measure(args.model, option, prompts, references, trained, held_out) for option in ["float32", *options]]
    print_table(rows, len(prompts))


if __name__ == "__main__":
    main()
