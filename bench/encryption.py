"""What sealing customers' texts costs: the same operations with encryption on and off, in one run,
in alternating rounds (on, off, on, off...) so that the machine's noise falls on both alike.

- job submit + finish: inference.services.job_submit, then job_claim and job_finish with a
  ~500-character output, called in-process (no worker; the queued message is purged at the end);
- the history page, GET /jobs/, signed in, a workspace with a few hundred jobs;
- a job's page, GET /jobs/<id>/.

"Off" swaps core.crypto.seal and core.crypto.open_sealed (which the sealed fields call through the
module) for a null codec: the same layout, header, nonce and tag, around the plaintext, with no AES
and no data key looked up. The history pages of the two modes are two members with the same jobs,
one's sealed, the other's not, since a value sealed one way does not open the other.

Usage:  .venv/bin/python bench/encryption.py [ROUNDS]
Uses DATABASE_URL and REDIS_URL when set; otherwise SQLite in var/ and an embedded Redis.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py is named like the standard library's queue module: keep this folder off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import os
import random
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings")
# The test profile: DEBUG off as in production (no SQL kept per query), a fixed master key and the
# tiny test model, whose tokenizer job_submit counts prompts with.
os.environ.setdefault("INKWELL_ENV", "test")
os.environ.setdefault("DATABASE_URL", f"sqlite:///{ROOT / 'var' / 'bench-encryption.sqlite3'}")
os.environ.setdefault("INKWELL_EMBEDDED_REDIS_PORT", "6399")

import django

django.setup()

from django.conf import settings
from django.core.management import call_command
from django.test import Client

from accounts.models import Membership, User
from accounts.workspaces import membership_personal
from bench.search import jobs_make, text_of
from billing.models import Plan
from core import crypto
from inference import catalog, services, streams
from inference.models import FinishReason, GenerationJob
from inference.outcome import JobOutcome
from inference.selectors import jobs_of
from saas.celery import app
from saas.embedded import EmbeddedRedis

HISTORY_JOBS = 300
TAG_BYTES = 16  # AES-GCM's tag, kept by the null codec so values are as long as sealed ones
SUBMIT = "job submit + claim + finish"
HISTORY = f"GET /jobs/ (history, {HISTORY_JOBS} jobs)"
SUBMIT_TARGET_MS = 1.0
HISTORY_TARGET_PERCENT = 10.0


def ms(seconds: float) -> float:
    return seconds * 1000


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def null_seal(workspace_id: int, plaintext: bytes, aad: bytes, *, data_key_id: int | None = None) -> bytes:
    return crypto.VERSION + bytes(8) + bytes(crypto.NONCE_BYTES) + plaintext + bytes(TAG_BYTES)


def null_open(workspace_id: int, sealed: bytes, aad: bytes) -> bytes:
    return bytes(sealed[crypto.OVERHEAD - TAG_BYTES : -TAG_BYTES])


class CodecClock:
    """Seconds spent inside core.crypto.seal and open_sealed, whichever codec is in place: the part
    of an operation that encryption can change, timed apart from the rest and its noise."""

    def __init__(self):
        self.seconds = 0.0
        self.real = (crypto.seal, crypto.open_sealed)

    def timed(self, function: Callable) -> Callable:
        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return run

    @contextmanager
    def encryption(self, on: bool) -> Iterator[None]:
        """Encryption as it is (on), or the null codec in its place (off); timed either way."""
        sealing, opening = self.real if on else (null_seal, null_open)
        crypto.seal, crypto.open_sealed = self.timed(sealing), self.timed(opening)
        try:
            yield
        finally:
            crypto.seal, crypto.open_sealed = self.real


def member_fresh(email: str) -> Membership:
    user, _ = User.objects.get_or_create(email=email)
    GenerationJob.objects.filter(user=user).delete()
    return membership_personal(user)


def setup_members(clock: CodecClock) -> dict[str | bool, Membership]:
    """The member who submits, and the members whose history is sealed (True) or not (False)."""
    call_command("migrate", verbosity=0)
    call_command("seed", verbosity=0)
    if catalog.local_model_missing(next(iter(settings.INFERENCE_MODELS))):  # job_submit counts with its tokenizer
        call_command("build_demo_model", size="tiny" if settings.TESTING else "demo")
    Plan.objects.update(is_default=False)
    Plan.objects.update_or_create(
        slug="bench-encryption",
        defaults={
            "name": "Bench encryption", "is_default": True, "monthly_token_allowance": 10**12,
            "max_new_tokens": 16, "max_prompt_tokens": 1000, "max_concurrent_jobs": 10**6,
            "requests_per_minute": 10**7, "allowed_models": list(settings.INFERENCE_MODELS),
        },
    )  # fmt: skip
    members = {"submit": member_fresh("bench-encryption@inkwell.local")}
    for on in (True, False):
        member = members[on] = member_fresh(f"bench-encryption-{'on' if on else 'off'}@inkwell.local")
        with clock.encryption(on):
            jobs_make(member, HISTORY_JOBS)
    return members


def stored_in_clear(job_id, text: str) -> bool:
    raw = GenerationJob.objects.filter(pk=job_id).values_list("prompt", flat=True).get()
    return text.encode() in bytes(raw)


def submit_finish(member: Membership, prompt: str, output: str, done: list) -> None:
    """One job through submit, claim and finish, as a worker would record it."""
    job = services.job_submit(member=member, prompt=prompt, max_new_tokens=16)
    claimed = services.job_claim(job_id=job.pk, worker="bench")
    services.job_finish(
        job=claimed, outcome=JobOutcome(text=output, completion_tokens=16, finish_reason=FinishReason.LENGTH)
    )
    done.append(job.pk)


def page(client: Client, path: str) -> None:
    response = client.get(path)
    if response.status_code != 200:
        raise RuntimeError(f"GET {path}: {response.status_code}")


def operations(members: dict[str | bool, Membership], prompt: str, done: list) -> dict[str, dict[bool, Callable]]:
    """Each operation measured, with its encryption-on and encryption-off version (the jobs that
    submit + finish makes go to ``done``)."""
    clients, job_paths = {}, {}
    for on in (True, False):
        clients[on] = Client(HTTP_HOST="127.0.0.1")
        clients[on].force_login(members[on].user)
        job_paths[on] = f"/jobs/{jobs_of(members[on]).order_by('-created_at').first().pk}/"
    output = text_of(random.Random(14), 500, 500)
    return {
        SUBMIT: {on: lambda: submit_finish(members["submit"], prompt, output, done) for on in (True, False)},
        HISTORY: {on: (lambda on=on: page(clients[on], "/jobs/")) for on in (True, False)},
        "GET /jobs/<id>/ (a job's page)": {
            on: (lambda on=on: page(clients[on], job_paths[on])) for on in (True, False)
        },
    }


def measure(run: Callable[[], None], clock: CodecClock) -> tuple[float, float, float]:
    """(wall ms, this process's CPU ms, ms inside the codec) of one run."""
    clock.seconds = 0.0
    start, start_cpu = time.perf_counter(), time.process_time()
    run()
    return ms(time.perf_counter() - start), ms(time.process_time() - start_cpu), ms(clock.seconds)


def main(rounds: int) -> None:
    embedded = None
    if settings.REDIS_EMBEDDED:
        embedded = EmbeddedRedis(port=settings.EMBEDDED_REDIS_PORT)
        embedded.start()
    clock = CodecClock()
    members = setup_members(clock)
    prompt = text_of(random.Random(15), 200, 200)
    done: list = []
    ops = operations(members, prompt, done)
    samples = {label: {True: [], False: []} for label in ops}
    try:
        for on in (True, False):  # warm up: tokenizer, templates, data key, connections
            with clock.encryption(on):
                for run in ops.values():
                    run[on]()
        # Short rounds, many of them: each mode gets its share of every passing slowdown.
        for round_number in range(rounds * 2):
            on = round_number % 2 == 0
            with clock.encryption(on):
                for label, run in ops.items():
                    samples[label][on].append(measure(run[on], clock))
            if stored_in_clear(done[-1], prompt) == on:
                raise RuntimeError(f"encryption {'on' if on else 'off'}: the prompt was stored the other way")
    finally:
        app.control.purge()  # the queued messages of jobs that are already finished
        streams.streams_delete([str(pk) for pk in done])
        if embedded is not None:
            embedded.stop()
    report(samples, rounds)


def report(samples: dict, rounds: int) -> None:
    database = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    print(
        f"database: {database}, {rounds} rounds each way, alternating on/off; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end"
    )
    print("wall clock, ms:")
    print(f"{'operation':<36}{'p50 on':>9}{'p50 off':>9}{'added ms':>10}{'ratio':>8}{'p95 on':>9}{'p95 off':>9}")
    medians = {}
    for label, runs in samples.items():
        wall = {on: [sample[0] for sample in runs[on]] for on in runs}
        on, off = statistics.median(wall[True]), statistics.median(wall[False])
        medians[label] = (on, off)
        print(
            f"{label:<36}{on:>9.2f}{off:>9.2f}{on - off:>10.2f}{on / off:>8.3f}"
            f"{pct(wall[True], 0.95):>9.2f}{pct(wall[False], 0.95):>9.2f}"
        )
    print("the same runs: CPU time of this process (p50), and time inside seal/open (mean), ms:")
    print(f"{'operation':<36}{'CPU on':>9}{'CPU off':>9}{'added ms':>10}{'codec on':>10}{'codec off':>11}{'added':>8}")
    codec_added = {}
    for label, runs in samples.items():
        cpu = {on: statistics.median(sample[1] for sample in runs[on]) for on in runs}
        codec = {on: statistics.fmean(sample[2] for sample in runs[on]) for on in runs}
        codec_added[label] = codec[True] - codec[False]
        print(
            f"{label:<36}{cpu[True]:>9.2f}{cpu[False]:>9.2f}{cpu[True] - cpu[False]:>10.2f}"
            f"{codec[True]:>10.3f}{codec[False]:>11.3f}{codec_added[label]:>8.3f}"
        )
    submit_on, submit_off = medians[SUBMIT]
    history_on, history_off = medians[HISTORY]
    print(
        f"submit+finish added p50: {submit_on - submit_off:.2f} ms — target ≤ {SUBMIT_TARGET_MS:g} ms "
        f"(inside seal/open: {codec_added[SUBMIT]:.2f} ms)"
    )
    print(
        f"history page: {(history_on / history_off - 1) * 100:.1f} % slower — target ≤ {HISTORY_TARGET_PERCENT:g} % "
        f"(inside seal/open: {codec_added[HISTORY] / history_off * 100:.1f} % of the page)"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
