"""Load and chaos, measured: a private Inkwell under load through the REST API while Redis and
PostgreSQL are restarted and workers are SIGKILLed; then, per scenario, what a customer would
notice: accepted jobs lost, jobs charged twice, a ledger that disagrees with the jobs,
reservations left behind, and how long the backlog took to drain.

Usage:  .venv/bin/python bench/chaos.py [--quick] [--jobs N] [--soak-minutes N]

Everything runs on loopback and is private to the run: a PostgreSQL cluster initdb'd into a
temporary folder, a redis-server, one uvicorn web process, two Celery workers and the
maintenance process (the sweeper), on free ports; the machine's own PostgreSQL and Redis are
never touched. The run ends by itself within its time bound, stops everything it started and
removes its folder (also on Ctrl-C or failure), prints a table, and exits non-zero if a check
failed. Process logs stay in test-artifacts/chaos/bench/run-*/ (the last five runs).

Scenarios (default; --quick: a 100-job burst, one Redis restart (free slots), one kill, no
PostgreSQL restart and no soak):
  1. burst of --jobs (1000) jobs from 8 client processes over three plans (gen.high/normal/low)
  2. Redis SIGKILLed and restarted empty mid-load, once while the workers have free slots (they
     wait on the broker) and once with a queue backlogged (which the empty Redis forgets; the
     sweeper must send it again); PostgreSQL stopped
     with `pg_ctl stop -m fast` and started again 3 s later mid-load: the web and worker
     processes must recover without a restart (one that exits is replaced, as a supervisor
     would, and the check fails); clients retry 5xx and connection errors with their
     Idempotency-Key
  3. a worker SIGKILLed while it holds a batch and gen.low is backlogged: its jobs must be
     requeued by the sweeper and finished within 2 minutes; a replacement worker is started
  4. soak: steady load while a random worker is SIGKILLed every 30-90 s (and replaced)
and a last row, every job of the run once all have had two minutes to end.

Columns: jobs submitted by the clients and accepted (201, or 200 for a retry the server had
already accepted); final statuses; lost: accepted but missing, or still queued/running when the
scenario's drain ended (3 minutes); double-charged: a final job without exactly one usage record
equal to its charge; ledger: every user's QuotaPeriod.used equal to the sum of its jobs' and
usage records' charges and .reserved to what its active jobs hold, each job charged by the rule;
reserved after: tokens still reserved for the scenario's jobs; drain s: from the last submit to
the scenario's last job ending; slowest s: the longest submit-to-end of one job (over 2 minutes
fails); client errors: responses and connection errors the clients retried.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py is named like the standard library's queue module: keep this folder off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import argparse
import signal
import time
import traceback
from collections.abc import Callable

from tests.chaos.harness import (
    Deadline,
    HarnessError,
    Load,
    Stack,
    StackConfig,
    Verdict,
    end_of_run,
    format_table,
    missing_services,
    scenario_burst,
    scenario_restart,
    scenario_soak,
    scenario_worker_kill,
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 100-job burst, one Redis restart, one kill, no soak")
    parser.add_argument("--jobs", type=int, default=None, help="jobs in the burst (default 1000, 100 with --quick)")
    parser.add_argument("--soak-minutes", type=float, default=None, help="soak length (default 10, 0 with --quick)")
    parser.add_argument("--processes", type=int, default=8, help="client processes (default 8)")
    parser.add_argument("--concurrency", type=int, default=8, help="task slots per worker (default 8)")
    parser.add_argument("--soak-rate", type=float, default=5.0, help="jobs per second during the soak (default 5)")
    args = parser.parse_args(argv)
    if args.jobs is None:
        args.jobs = 100 if args.quick else 1000
    if args.soak_minutes is None:
        args.soak_minutes = 0 if args.quick else 10
    return args


def time_bound(args: argparse.Namespace) -> float:
    """The whole run's bound in seconds: set-up, each scenario with room to drain, the soak."""
    seconds = 240 + 180 + args.jobs * 0.6  # set-up; the burst
    seconds += 300 if args.quick else 600  # the Redis restarts
    seconds += 0 if args.quick else 300  # the PostgreSQL restart
    seconds += 360  # the kill (requeue limit 2 min, then the backlog drains)
    seconds += args.soak_minutes * 60 + 300 if args.soak_minutes else 0
    return seconds + 120  # the end-of-run check


def scenarios(args: argparse.Namespace, stack: Stack, deadline: Deadline) -> list[tuple[str, Callable[[], Verdict]]]:
    burst = Load(args.jobs, args.processes)
    # Long jobs submitted faster than two workers run them: at the fault there are submits in
    # flight, a queue (which an empty Redis has forgotten) and full batches.
    backlogged = Load(400, args.processes, tokens=(192, 256))
    # Long jobs at a pace the workers keep up with: at the fault they hold running jobs and wait
    # on the broker for more.
    free_slots = Load(
        100 if args.quick else 200, args.processes, over_seconds=10 if args.quick else 20, tokens=(64, 256)
    )
    # Long jobs on gen.low only, faster submitted than run: a backlog builds up behind the batch.
    backlog = Load(150 if args.quick else 400, args.processes, tokens=(192, 256), queues=("gen.low",))
    steps = [
        ("burst", lambda: scenario_burst(stack, burst, deadline=deadline)),
        (
            "redis restart, free slots",
            lambda: scenario_restart(
                stack,
                free_slots,
                service="redis",
                tag="redis-idle",
                deadline=deadline,
                fault_when_queued=10**6,
                label="mid-load, workers with free slots",
            ),
        ),
    ]
    if not args.quick:
        steps.append(
            (
                "redis restart, backlog",
                lambda: scenario_restart(
                    stack,
                    backlogged,
                    service="redis",
                    tag="redis",
                    deadline=deadline,
                    label="mid-load, queue backlogged",
                ),
            )
        )
    if not args.quick:
        # Short and long jobs at a steady pace, so workers have free slots and claim jobs at the
        # moment the database goes away, while others finish theirs.
        paced = Load(300, args.processes, over_seconds=30, tokens=(2, 128))
        steps.append(
            (
                "postgres restart",
                lambda: scenario_restart(
                    stack, paced, service="postgres", tag="postgres", deadline=deadline, down_seconds=3
                ),
            )
        )
    steps.append(("worker kill", lambda: scenario_worker_kill(stack, backlog, deadline=deadline)))
    if args.soak_minutes:
        # Enough long jobs that every kill finds a batch running.
        soak = Load(max(1, round(args.soak_rate * args.soak_minutes * 60)), 4, tokens=(32, 256))
        steps.append(
            ("soak", lambda: scenario_soak(stack, soak, minutes=args.soak_minutes, deadline=deadline, log=log))
        )
    return steps


def run(args: argparse.Namespace) -> int:
    why = missing_services()
    if why:
        log(f"cannot run: {why}")
        return 2
    bound = time_bound(args)
    deadline = Deadline(bound)
    verdicts: list[Verdict] = []
    stack = Stack(StackConfig(workers=2, concurrency=args.concurrency, users_per_plan=3))
    log(f"time bound {bound / 60:.0f} min; logs in {stack.log_dir.relative_to(ROOT)}/")
    failed_to_run = ""
    try:
        log("starting a private PostgreSQL, Redis, web server, 2 workers and the sweeper")
        stack.start(deadline)
        log(f"up: web {stack.base_url}, postgres :{stack.pg.port}, redis :{stack.redis.port}")
        log(f"sweeper: {stack.sweeper_kind}")
        steps = scenarios(args, stack, deadline)
        for name, step in steps:
            deadline.check(name)
            log(f"{name}...")
            started = time.monotonic()
            verdict = step()
            verdicts.append(verdict)
            log(f"{name}: {'ok' if verdict.ok else 'FAILED'} in {time.monotonic() - started:.0f}s")
        verdicts.append(end_of_run(stack, timeout=deadline.cap(120)))
    except KeyboardInterrupt:
        failed_to_run = "interrupted"
    except HarnessError as error:
        failed_to_run = f"harness: {error}"
    except Exception:
        failed_to_run = "harness crashed:\n" + traceback.format_exc()
    finally:
        log("stopping everything")
        stack.stop()
    print()
    print(format_table(verdicts))
    if failed_to_run:
        print(f"\nNOT COMPLETED: {failed_to_run}")
        return 2
    bad = [v for v in verdicts if not v.ok]
    print(f"\n{len(verdicts) - len(bad)}/{len(verdicts)} scenarios passed every check")
    return 1 if bad else 0


def main() -> None:
    # Explicitly, also for SIGINT: a shell starts background jobs with SIGINT ignored.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    sys.exit(run(parse_args()))


if __name__ == "__main__":
    main()
