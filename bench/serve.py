"""Serving benchmark: Inkwell's engine vs transformers' continuous batching under a Poisson load.

Usage:  .venv/bin/python bench/serve.py [--quick] [--rates 0.25,0.5,2] [--requests 48] [--dtype float32]
                                        [--engine-dtypes bfloat16,int8] [--max-batch 32] [--threads N]
                                        [--model PATH] [--device cpu]

One model (by default the GPT-2-size model of bench/engine.py: 124M parameters, random weights,
built locally), one set of requests (mixed prompt and output lengths drawn with a fixed seed,
greedy, end-of-sequence ignored so every request runs its full length) arriving as a Poisson
stream. The same arrival pattern is replayed at each rate (the gaps are drawn once, at 1 request/s,
and divided by the rate), through two systems on the same model object, dtype and thread count,
one after the other for each rate:
  engine        inkwell's ``Engine``: each request is submitted at its arrival time
  transformers  ``model.init_continuous_batching()`` (``ContinuousBatchingManager``): each request
                is added at its arrival time; a collector thread reads results as they finish
--engine-dtypes adds engine runs at each rate on other precisions (each its own copy of the model,
loaded with that INFERENCE_DTYPE option), each compared with transformers on --dtype.
Both hold at most ``--max-batch`` requests in a step and prefill at most 1,024 prompt tokens a
step (transformers: ``max_batch_tokens`` = 1,024 + the batch's decode tokens); neither streams
text to a listener. Each system warms up (one short request) before its timed run.

For each rate and system it prints:
  tok/s       sustained output tokens per second: all output tokens over the time from the
              first arrival to the last token (the drain at the end included, for both)
  offered     the load offered: rate x mean output tokens (a system that keeps up matches it)
  TTFT        time to first token from the request's arrival, p50 / p95
  TPOT        time per output token after the first, per request, p50 / p95
  = engine    transformers' requests whose greedy tokens equal the engine's exactly
Then two ratio lines: output tokens/s at the highest rate (saturation: both overloaded, so the
ratio of their capacities), and goodput (the highest rate each keeps with TTFT p95 <= 2 s).

Last, the engine's decode-step split at batch 1, 8 and 32: the bench wraps the model's
``forward`` (an instance attribute, so only this model is timed) and records each call's start,
end and input shape. In steady decoding (every request admitted, none finished yet) one step is
the time from one decoding forward's start to the next one's; the forward is its own duration;
the rest is the engine's own work around it (scheduling, cache bookkeeping, masks, sampling,
detokenisation, the loop itself).

--quick: prompts 8-128, outputs 16-64, 24 requests at 0.5, 1 and 4 requests/s (about 3 minutes on
2 quiet cores). The default (prompts 8-512, outputs 16-512, 48 requests at 0.25, 0.5 and 2
requests/s) took about 24 minutes with --engine-dtypes bfloat16 on 2 quiet cores: see README
"Measured". The saturation ratio counts the drain after the last arrival, when the batch shrinks;
the fewer the requests, the larger that share, so compare runs of the same --requests. On a CPU
shared with other busy processes, --threads 1 is faster than 2: torch's threads wait for each
other at every operation.

--device cuda (bench/gpu_check.sh): the same runs on a GPU; after each system's run it also prints
the peak GPU memory allocated (torch.cuda.max_memory_allocated, reset before each run).
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py is named like the standard library's queue module: keep this folder off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import random
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from transformers import ContinuousBatchingConfig, GenerationConfig

from bench.engine import DEFAULT_MODEL, pct
from inference.engine import (
    DEMO_CORPUS,
    Engine,
    FinishReason,
    GenerationRequest,
    LoadedModel,
    ModelSpec,
    SamplingParams,
    build_demo_model,
    load_model,
)

TTFT_GOAL_S = 2.0  # goodput: the highest rate a system keeps with TTFT p95 at or below this
PREFILL_TOKENS_PER_STEP = 1024  # the engine's default, given to transformers as its token budget
SPLIT_BATCHES = (1, 8, 32)
SPLIT_PROMPT_TOKENS = 128
SPLIT_WARM_STEPS = 2  # decoding steps left out at the start of the split (first-call allocations)
SPLIT_STEPS = 16


@dataclass(frozen=True)
class Workload:
    prompt_tokens: tuple[int, int]
    output_tokens: tuple[int, int]
    requests: int
    rates: tuple[float, ...]  # requests per second, lowest first; the last one saturates


FULL = Workload(prompt_tokens=(8, 512), output_tokens=(16, 512), requests=48, rates=(0.25, 0.5, 2.0))
QUICK = Workload(prompt_tokens=(8, 128), output_tokens=(16, 64), requests=24, rates=(0.5, 1.0, 4.0))


@dataclass(frozen=True)
class Job:
    prompt_ids: list[int]
    max_new_tokens: int
    arrival: float  # seconds after the first arrival, at 1 request/s (divide by the rate)


@dataclass(frozen=True)
class Served:
    """One request as a system served it; times are ``time.perf_counter()`` readings."""

    arrival: float
    first_token: float
    last_token: float
    token_ids: list[int]


@dataclass(frozen=True)
class RunStats:
    tokens_per_s: float
    ttft: list[float]
    tpot: list[float]

    @property
    def ttft_p95(self) -> float:
        return pct(self.ttft, 0.95)


# --- the workload --------------------------------------------------------------------------------


def make_jobs(tokenizer, workload: Workload, seed: int = 7) -> list[Job]:
    """Prompts cut from the shipped corpus, lengths uniform in the workload's ranges, Poisson gaps."""
    rng = random.Random(seed)
    corpus = tokenizer(DEMO_CORPUS.read_text(), verbose=False).input_ids  # longer than the context: no warning
    longest = workload.prompt_tokens[1]
    while len(corpus) <= longest + 1:
        corpus = corpus + corpus  # a longer prompt than the corpus: wrap around it
    jobs, arrival = [], 0.0
    for _ in range(workload.requests):
        length = rng.randint(*workload.prompt_tokens)
        start = rng.randint(0, len(corpus) - length - 1)
        jobs.append(Job(corpus[start : start + length], rng.randint(*workload.output_tokens), arrival))
        arrival += rng.expovariate(1.0)
    return jobs


def sleep_until(moment: float) -> None:
    delay = moment - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


def check_served(system: str, jobs: list[Job], served: list[Served]) -> None:
    for i, (job, one) in enumerate(zip(jobs, served, strict=True)):
        if len(one.token_ids) != job.max_new_tokens:
            raise SystemExit(f"{system}: request {i} gave {len(one.token_ids)} tokens, not {job.max_new_tokens}")


# --- (a) inkwell's engine ------------------------------------------------------------------------


def greedy(max_new_tokens: int) -> SamplingParams:
    return SamplingParams(max_new_tokens=max_new_tokens, temperature=0, ignore_eos=True)


def run_engine(loaded: LoadedModel, jobs: list[Job], rate: float, max_batch: int) -> list[Served]:
    engine = Engine(loaded, max_batch=max_batch, prefill_tokens_per_step=PREFILL_TOKENS_PER_STEP).start()
    try:
        engine.submit(GenerationRequest("warm", jobs[0].prompt_ids, greedy(2))).wait()
        start = time.perf_counter()
        submitted = []
        for i, job in enumerate(jobs):
            arrival = start + job.arrival / rate
            sleep_until(arrival)
            request = GenerationRequest(str(i), job.prompt_ids, greedy(job.max_new_tokens))
            submitted.append((arrival, engine.submit(request)))
        served = []
        for arrival, request in submitted:
            result = request.wait()
            if result is None or result.finish_reason != FinishReason.LENGTH or result.time_to_first_token is None:
                raise SystemExit(f"engine: request {request.request_id} ended with {result}")
            # The result's times count from submission; its end is the step of its last token.
            served.append(
                Served(
                    arrival=arrival,
                    first_token=request.submitted_at + result.time_to_first_token,
                    last_token=request.submitted_at + result.generation_seconds,
                    token_ids=result.token_ids,
                )
            )
    finally:
        engine.stop()
    return served


# --- (b) transformers' continuous batching -----------------------------------------------------


def start_manager(model: torch.nn.Module, max_batch: int, longest_request: int):
    """A ContinuousBatchingManager with the engine's limits and a KV cache large enough for
    ``max_batch`` requests of the longest length (so the cache never holds it back: the engine's
    is not limited either)."""
    page_size = 256
    pages_per_request = -(-longest_request // page_size) + 1
    config = ContinuousBatchingConfig(
        page_size=page_size,
        num_blocks=max_batch * pages_per_request,
        max_requests_per_batch=max_batch,
        max_batch_tokens=PREFILL_TOKENS_PER_STEP + max_batch,
        allow_block_sharing=False,  # no shared prefixes in this workload; the engine shares none
    )
    generation = GenerationConfig(do_sample=False, eos_token_id=-1, pad_token_id=0)
    manager = model.init_continuous_batching(generation_config=generation, continuous_batching_config=config)
    manager.start()  # its loop runs in the caller's inference mode, which is on
    return manager


def run_transformers(
    model: torch.nn.Module, jobs: list[Job], rate: float, max_batch: int, longest_request: int
) -> list[Served]:
    manager = start_manager(model, max_batch, longest_request)
    try:
        manager.add_request(jobs[0].prompt_ids, request_id="warm", max_new_tokens=2, eos_token_id=-1)
        while manager.get_result(request_id="warm", timeout=1.0) is None:
            pass
        outputs: dict[str, object] = {}
        collector = threading.Thread(target=collect, args=(manager, len(jobs), outputs), daemon=True)
        collector.start()
        start = time.perf_counter()
        arrivals = []
        for i, job in enumerate(jobs):
            arrival = start + job.arrival / rate
            sleep_until(arrival)
            manager.add_request(
                job.prompt_ids,
                request_id=str(i),
                max_new_tokens=job.max_new_tokens,
                record_timestamps=True,
                eos_token_id=-1,  # end-of-sequence ignored, as in the engine's requests
            )
            arrivals.append(arrival)
        collector.join()
    finally:
        manager.stop(block=True)
        manager.destroy()
    served = []
    for i, arrival in enumerate(arrivals):
        output = outputs.get(str(i))
        if output is None or output.error is not None or not output.timestamps:
            raise SystemExit(f"transformers: request {i} ended with {output}")
        served.append(Served(arrival, output.timestamps[0], output.timestamps[-1], list(output.generated_tokens)))
    return served


def collect(manager, count: int, outputs: dict[str, object]) -> None:
    """Read finished requests off the manager as they come, until ``count`` have finished."""
    while len(outputs) < count:
        output = manager.get_result(timeout=0.5)
        if output is not None and output.is_finished():
            outputs[output.request_id] = output
        elif output is None and not manager.is_running():
            return  # its loop died: the caller reports the missing requests


# --- numbers -------------------------------------------------------------------------------------


def stats(served: list[Served]) -> RunStats:
    tokens = sum(len(s.token_ids) for s in served)
    elapsed = max(s.last_token for s in served) - min(s.arrival for s in served)
    ttft = [s.first_token - s.arrival for s in served]
    tpot = [(s.last_token - s.first_token) / (len(s.token_ids) - 1) for s in served if len(s.token_ids) > 1]
    return RunStats(tokens / elapsed, ttft, tpot)


def agreement(served: list[Served], reference: list[Served]) -> float:
    same = sum(s.token_ids == r.token_ids for s, r in zip(served, reference, strict=True))
    return same / len(served)


def goodput(rates: list[float], runs: list[RunStats]) -> float | None:
    kept = [rate for rate, run in zip(rates, runs, strict=True) if run.ttft_p95 <= TTFT_GOAL_S]
    return max(kept) if kept else None


def print_row(rate: float, system: str, offered: float, run: RunStats, same: str) -> None:
    print(
        f"{rate:>6.2f}  {system:<19}{run.tokens_per_s:>8.1f}{offered:>9.1f}"
        f"{statistics.median(run.ttft):>9.2f}s{run.ttft_p95:>8.2f}s"
        f"{statistics.median(run.tpot) * 1000:>9.1f}ms{pct(run.tpot, 0.95) * 1000:>8.1f}ms{same:>9}"
    )


def print_ratios(
    rates: list[float], engine: str, engine_runs: list[RunStats], peer: str, peer_runs: list[RunStats], offered: float
) -> None:
    """Saturation throughput and goodput of one engine variant against transformers."""
    top_engine, top_peer = engine_runs[-1], peer_runs[-1]
    print(
        f"\n{engine} ÷ {peer} continuous batching: {top_engine.tokens_per_s / top_peer.tokens_per_s:.2f}x"
        f"  (output tokens/s at {rates[-1]:g} requests/s)"
    )
    for system, run in ((engine, top_engine), (peer, top_peer)):
        if run.tokens_per_s >= 0.9 * offered:
            print(f"  note: {system} kept up with {rates[-1]:g} requests/s: that rate does not saturate it")
    best_engine, best_peer = goodput(rates, engine_runs), goodput(rates, peer_runs)
    label = f"goodput (highest rate with TTFT p95 <= {TTFT_GOAL_S:g} s): {engine} {best_engine or 'none'}, "
    label += f"{peer} {best_peer or 'none'} requests/s"
    if best_engine and best_peer:
        print(f"{label}: {best_engine / best_peer:.2f}x")
    elif best_engine:
        print(f"{label}: more than {best_engine / rates[0]:.2f}x ({peer} keeps none of the rates tried)")
    else:
        print(f"{label}: no ratio ({engine} keeps none of the rates tried; try lower --rates)")


# --- the decode-step split -----------------------------------------------------------------------


@dataclass(frozen=True)
class ForwardCall:
    start: float
    end: float
    rows: int
    tokens: int  # input tokens per row: 1 for a decoding step


def timed(forward: Callable, calls: list[ForwardCall]) -> Callable:
    def timed_forward(*args, **kwargs):
        start = time.perf_counter()
        output = forward(*args, **kwargs)
        rows, tokens = kwargs["input_ids"].shape
        calls.append(ForwardCall(start, time.perf_counter(), rows, tokens))
        return output

    return timed_forward


def decode_split(loaded: LoadedModel, jobs: list[Job], batch: int) -> tuple[float, float]:
    """Seconds per decoding step and in the model's forward, summed over the measured steps."""
    calls: list[ForwardCall] = []
    model = loaded.model
    # An instance attribute shadows the class's forward for this model only; deleting it restores it.
    model.forward = timed(model.forward, calls)
    engine = Engine(loaded, max_batch=batch, prefill_tokens_per_step=PREFILL_TOKENS_PER_STEP).start()
    try:
        prompts = [job.prompt_ids for job in jobs if len(job.prompt_ids) >= SPLIT_PROMPT_TOKENS]
        prompts = prompts or [jobs[0].prompt_ids]
        requests = [
            engine.submit(GenerationRequest(f"split{i}", prompts[i % len(prompts)][:SPLIT_PROMPT_TOKENS], params))
            for i, params in enumerate([greedy(SPLIT_WARM_STEPS + SPLIT_STEPS + 2)] * batch)
        ]
        for request in requests:
            request.wait()
    finally:
        engine.stop()
        del model.forward

    def whole_batch(call: ForwardCall) -> bool:
        return call.rows == batch and call.tokens == 1

    # Consecutive decoding forwards of the whole batch: nothing (no prefill) ran between them.
    steps = [
        (later.start - earlier.start, earlier.end - earlier.start)
        for earlier, later in pairwise(calls)
        if whole_batch(earlier) and whole_batch(later)
    ][SPLIT_WARM_STEPS:]
    if not steps:
        raise SystemExit(f"decode split: no steady decoding steps at batch {batch}")
    return sum(s for s, _ in steps) / len(steps), sum(f for _, f in steps) / len(steps)


def print_split(loaded: LoadedModel, jobs: list[Job]) -> None:
    print(
        f"\nengine decode step at batch 1, 8, 32 ({SPLIT_PROMPT_TOKENS}-token prompts, mean of {SPLIT_STEPS} "
        f"steps after {SPLIT_WARM_STEPS}; forward timed by wrapping model.forward)"
    )
    print(f"{'batch':>5}{'step':>10}{'forward':>10}{'other':>10}{'forward share':>15}")
    for batch in SPLIT_BATCHES:
        step, forward = decode_split(loaded, jobs, batch)
        print(
            f"{batch:>5}{step * 1000:>8.1f}ms{forward * 1000:>8.1f}ms{(step - forward) * 1000:>8.1f}ms"
            f"{forward / step * 100:>14.0f}%"
        )


# --- main ----------------------------------------------------------------------------------------


def reset_peak_memory(loaded: LoadedModel) -> None:
    if loaded.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(loaded.device)


def print_peak_memory(loaded: LoadedModel, rate: float, system: str) -> None:
    """On a GPU, the run's peak allocation (model weights included); on a CPU, nothing."""
    if loaded.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(loaded.device) / 2**30
        print(f"{'':>6}  {system:<19}peak GPU memory allocated at {rate:g} req/s: {peak:.2f} GiB")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter requests, fewer of them, higher rates")
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument(
        "--engine-dtypes",
        default="",
        help="more engine runs at each rate on these precisions (comma-separated INFERENCE_DTYPE options, e.g. "
        "bfloat16,int8), each compared with transformers on --dtype",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--rates", help="requests per second, comma-separated, lowest first; the last saturates")
    parser.add_argument("--requests", type=int, help="requests per run")
    parser.add_argument("--max-batch", type=int, default=32, help="requests decoded together, both systems")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip-split", action="store_true", help="leave out the decode-step split")
    return parser.parse_args()


def workload_from(args: argparse.Namespace) -> Workload:
    base = QUICK if args.quick else FULL
    rates = tuple(sorted(float(r) for r in args.rates.split(","))) if args.rates else base.rates
    return Workload(base.prompt_tokens, base.output_tokens, args.requests or base.requests, rates)


def main() -> None:
    args = parse_args()
    workload = workload_from(args)
    torch.set_num_threads(args.threads)
    if not (Path(args.model) / "config.json").exists():
        print(f"building the GPT-2-size benchmark model in {args.model} ...", flush=True)
        build_demo_model(args.model, size="gpt2")
    torch.manual_seed(0)
    loaded = load_model(ModelSpec("bench", args.model, dtype=args.dtype, device=args.device))
    # The engine on --dtype and on each --engine-dtypes option; transformers on --dtype only.
    engines = {"engine": loaded}
    for option in filter(None, args.engine_dtypes.split(",")):
        engines[f"engine {option}"] = load_model(ModelSpec("bench", args.model, dtype=option, device=args.device))
    jobs = make_jobs(loaded.tokenizer, workload)
    longest = max(len(j.prompt_ids) + j.max_new_tokens for j in jobs)
    mean_output = statistics.mean(j.max_new_tokens for j in jobs)
    params = sum(p.numel() for p in loaded.model.parameters()) / 1e6
    print(
        f"model: {Path(args.model).name} ({params:.0f}M parameters, {args.dtype}), torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, max batch {args.max_batch}, "
        f"attention {loaded.model.config._attn_implementation}"
    )
    print(
        f"{len(jobs)} requests a run, prompts {workload.prompt_tokens[0]}-{workload.prompt_tokens[1]} tokens, "
        f"outputs {workload.output_tokens[0]}-{workload.output_tokens[1]} (mean {mean_output:.0f}), greedy, "
        f"end-of-sequence ignored; Poisson arrivals; both systems measured side by side in this one run\n"
    )
    print(
        f"{'req/s':>6}  {'system':<19}{'tok/s':>8}{'offered':>9}{'TTFT p50':>10}{'p95':>9}"
        f"{'TPOT p50':>11}{'p95':>10}{'= engine':>9}"
    )
    peer = "transformers"
    runs: dict[str, list[RunStats]] = {name: [] for name in [*engines, peer]}
    with torch.inference_mode():
        for rate in workload.rates:
            offered = rate * mean_output
            reference = None
            for name, model in engines.items():
                reset_peak_memory(model)
                served = run_engine(model, jobs, rate, args.max_batch)
                print_peak_memory(model, rate, name)
                check_served(name, jobs, served)
                runs[name].append(stats(served))
                reference = reference or served
                print_row(rate, name, offered, runs[name][-1], "")
            reset_peak_memory(loaded)
            peer_served = run_transformers(loaded.model, jobs, rate, args.max_batch, longest)
            print_peak_memory(loaded, rate, peer)
            check_served(peer, jobs, peer_served)
            runs[peer].append(stats(peer_served))
            print_row(rate, peer, offered, runs[peer][-1], f"{agreement(peer_served, reference):.0%}")
        saturating = workload.rates[-1] * mean_output
        for name in engines:
            print_ratios(list(workload.rates), name, runs[name], f"{peer} {args.dtype}", runs[peer], saturating)
        if not args.skip_split:
            print_split(loaded, jobs)


if __name__ == "__main__":
    main()
