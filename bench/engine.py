"""Engine throughput: naive generate vs static batches vs the continuous-batching engine.

Usage:  .venv/bin/python bench/engine.py [--jobs 32] [--model PATH] [--options int8,bfloat16]

One model (by default a GPT-2-size model built locally: 12 layers, 768 wide, 50,257-token
vocabulary, random weights), the same mixed jobs (8-128 prompt tokens, 16-128 new tokens, all
arriving together), greedy decoding, end-of-sequence ignored so every job runs its full length:
  (a) naive    one model.generate per job, one after another (a worker without batching)
  (b) static   model.generate on padded batches; a batch runs until its longest job is done
  (c) engine   the scheduler with 1, 8, 32 and 64 jobs in flight (64: every job twice), in fp32,
               then with the CPU options (int8 dynamic quantization, bf16) at 32 and 64
Prints generated tokens/s, the ratio to (a), p50/p95 time to first token (from arrival) and
greedy agreement with (a) (jobs whose tokens equal (a)'s exactly).
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py is named like the standard library's queue module: keep this folder off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import random
import statistics
import time

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from transformers import LogitsProcessor

from inference.engine import (
    DEMO_CORPUS,
    Engine,
    GenerationRequest,
    ModelSpec,
    SamplingParams,
    build_demo_model,
    load_model,
)

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "var" / "models" / "bench-gpt2"


def make_jobs(tokenizer, count: int, seed: int = 7) -> list[tuple[list[int], int]]:
    rng = random.Random(seed)
    corpus = tokenizer(DEMO_CORPUS.read_text()).input_ids
    jobs = []
    for _ in range(count):
        length = rng.randint(8, 128)
        start = rng.randint(0, len(corpus) - length - 1)
        jobs.append((corpus[start : start + length], rng.randint(16, 128)))
    return jobs


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class FirstToken(LogitsProcessor):
    """A logits processor that notes when generate chooses its first token (prefill done)."""

    def __init__(self) -> None:
        self.at: float | None = None

    def __call__(self, input_ids, scores):
        if self.at is None:
            self.at = time.perf_counter()
        return scores


def run_naive(model, jobs):
    outputs, ttft = [], []
    start = time.perf_counter()
    for prompt, new in jobs:
        ids = torch.tensor([prompt])
        first = FirstToken()
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new, do_sample=False,
            logits_processor=[first],
        )  # fmt: skip
        outputs.append(out[0, len(prompt) :].tolist())
        # Every job arrived at the start; job i begins after all jobs before it finished.
        ttft.append(first.at - start)
    return time.perf_counter() - start, outputs, ttft


def run_static(model, tokenizer, jobs, batch_size: int):
    outputs: list[list[int]] = [[] for _ in jobs]
    ttft = [0.0] * len(jobs)
    start = time.perf_counter()
    for first in range(0, len(jobs), batch_size):
        batch = jobs[first : first + batch_size]  # arrival order, as a static batcher would take them
        longest = max(len(p) for p, _ in batch)
        pad = tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (longest - len(p)) + p for p, _ in batch])
        mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p, _ in batch])
        steps = max(n for _, n in batch)
        first_token = FirstToken()
        out = model.generate(
            ids, attention_mask=mask, max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
            logits_processor=[first_token],
        )  # fmt: skip
        for offset, (_, new) in enumerate(batch):
            outputs[first + offset] = out[offset, longest : longest + new].tolist()
            ttft[first + offset] = first_token.at - start
    return time.perf_counter() - start, outputs, ttft


def run_engine(loaded, jobs, in_flight: int):
    engine = Engine(loaded, max_batch=in_flight).start()
    try:
        # Warm the engine (first-call allocations) outside the timed run.
        engine.submit(GenerationRequest("warm", jobs[0][0], SamplingParams(max_new_tokens=2, temperature=0))).wait()
        start = time.perf_counter()
        requests = [
            engine.submit(
                GenerationRequest(str(i), prompt, SamplingParams(max_new_tokens=new, temperature=0, ignore_eos=True))
            )
            for i, (prompt, new) in enumerate(jobs)
        ]
        results = [r.wait() for r in requests]
        elapsed = time.perf_counter() - start
    finally:
        engine.stop()
    return elapsed, results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--options", default="int8,bfloat16", help="other engine dtypes to run at 32 and 64")
    parser.add_argument("--jobs", type=int, default=32)
    parser.add_argument("--in-flight", default="1,8,32,64")
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()
    if not (Path(args.model) / "config.json").exists():
        print(f"building the GPT-2-size benchmark model in {args.model} ...", flush=True)
        build_demo_model(args.model, size="gpt2")
    torch.manual_seed(0)
    reference = load_model(ModelSpec("bench", args.model, dtype="float32", device="cpu"))
    tokenizer = reference.tokenizer
    jobs = make_jobs(tokenizer, args.jobs)
    useful = sum(n for _, n in jobs)
    params = sum(p.numel() for p in reference.model.parameters()) / 1e6
    print(
        f"model: {Path(args.model).name}  ({params:.0f}M parameters), torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}"
    )
    print(f"{args.jobs} jobs, prompts 8-128 tokens, 16-128 new tokens, {useful} tokens to generate\n")

    rows = []
    with torch.inference_mode():
        naive_s, naive_out, naive_ttft = run_naive(reference.model, jobs)
    naive_tps = useful / naive_s
    rows.append(("(a) naive generate, one by one", naive_tps, naive_ttft, 1.0))
    for size in (8, len(jobs)):
        with torch.inference_mode():
            s, out, ttft = run_static(reference.model, tokenizer, jobs, size)
        agree = sum(o == n for o, n in zip(out, naive_out, strict=True)) / len(jobs)
        rows.append((f"(b) static batches of {size}", useful / s, ttft, agree))
    runs = [("float32", int(x)) for x in args.in_flight.split(",")]
    runs += [(dtype, n) for dtype in args.options.split(",") if dtype for n in (32, 64)]
    models = {"float32": reference}
    for dtype, in_flight in runs:
        if dtype not in models:
            models[dtype] = load_model(ModelSpec("bench", args.model, dtype=dtype, device="cpu"))
        run_jobs = jobs if in_flight <= len(jobs) else jobs * (in_flight // len(jobs))
        s, results = run_engine(models[dtype], run_jobs, in_flight)
        generated = sum(r.completion_tokens for r in results)
        agree = sum(r.token_ids == naive_out[i % len(jobs)] for i, r in enumerate(results)) / len(results)
        ttft = [r.time_to_first_token for r in results]
        rows.append((f"(c) engine {dtype}, {in_flight} in flight", generated / s, ttft, agree))

    print(f"{'run':<42}{'tokens/s':>10}{'x naive':>9}{'TTFT p50':>10}{'TTFT p95':>10}{'greedy = (a)':>14}")
    for label, tps, ttft, agree in rows:
        print(
            f"{label:<42}{tps:>10.1f}{tps / naive_tps:>8.1f}x{statistics.median(ttft):>9.2f}s"
            f"{pct(ttft, 0.95):>9.2f}s{agree * 100:>13.0f}%"
        )


if __name__ == "__main__":
    main()
