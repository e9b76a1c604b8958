"""History search over sealed texts: 10,000 jobs in one workspace, searched as the history page
does (inference.selectors.job_history, then the first page: its count and its rows), for a rare
word, a common one, a word that matches nothing (the whole history opened and scanned) and a
common word with a status filter; then the whole page, GET /jobs/?q=, through Django's test client.

Usage:  .venv/bin/python bench/search.py [RUNS]
Uses DATABASE_URL and REDIS_URL when set; otherwise SQLite in var/ and an embedded Redis.
The jobs stay in the database between runs; they are made again only when their count is wrong
or they no longer open (another master key).
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
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings")
# The test profile: DEBUG off as in production (no SQL kept per query) and a fixed master key, so
# the jobs kept between runs always open.
os.environ.setdefault("INKWELL_ENV", "test")
os.environ.setdefault("DATABASE_URL", f"sqlite:///{ROOT / 'var' / 'bench-search.sqlite3'}")
os.environ.setdefault("INKWELL_EMBEDDED_REDIS_PORT", "6398")

import django

django.setup()

from django.conf import settings
from django.core.management import call_command
from django.core.paginator import Paginator
from django.db import transaction
from django.test import Client
from django.utils import timezone

from accounts.models import Membership, User
from accounts.workspaces import membership_personal
from billing.selectors import entitlements_for
from billing.services.ledger import quota_period_open
from core.crypto import Undecryptable
from inference.models import GenerationJob, JobStatus
from inference.selectors import job_history, jobs_of
from inference.views import HISTORY_PAGE_SIZE
from saas.embedded import EmbeddedRedis

JOBS = 10_000
RARE_WORD, RARE_JOBS = "quokka", 300
COMMON_WORD, COMMON_SHARE = "invoice", 0.4
ABSENT_WORD = "zygomorphic"
TARGET_MS = 300
QUERIES = (
    ("rare word", RARE_WORD, ""),
    ("common word", COMMON_WORD, ""),
    ("no match (full scan)", ABSENT_WORD, ""),
    ("common word, status=succeeded", COMMON_WORD, JobStatus.SUCCEEDED),
)
VOCABULARY = """
the a of to and in for on with that this from by as at is are was be it we you they our your
please write summarize explain draft rewrite translate list compare review check answer improve
email letter report meeting customer client project contract clause payment schedule deadline
team budget quarter revenue growth risk plan strategy product feature release bug fix test code
function class module database query server request response error log user account password
policy privacy security data backup storage network latency throughput model training prompt
patient note symptom treatment dose history follow visit referral lab result normal elevated
short long clear formal friendly concise detailed bullet points paragraph table example step
first second next then finally because however therefore although while when where which
"""
WORDS = VOCABULARY.split()
SYSTEM_PROMPTS = ("You are a helpful assistant.", "You are a careful legal assistant.", "Answer briefly.")


def ms(seconds: float) -> float:
    return seconds * 1000


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def text_of(rng: random.Random, low: int, high: int) -> str:
    """Sentences of everyday words, ``low``-``high`` characters long."""
    target = rng.randint(low, high)
    sentences, length = [], 0
    while length < target:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 16))).capitalize() + "."
        sentences.append(sentence)
        length += len(sentence) + 1
    return " ".join(sentences)[:target]


def word_insert(rng: random.Random, text: str, word: str) -> str:
    """``text`` with ``word`` (sometimes capitalised: search ignores case) put between two words."""
    cut = text.find(" ", rng.randint(0, max(0, len(text) - 1)))
    cut = len(text) if cut < 0 else cut
    return f"{text[:cut]} {word.capitalize() if rng.random() < 0.3 else word}{text[cut:]}"


def job_texts(rng: random.Random, words: list[str], *, failed: bool) -> tuple[str, list | None, str]:
    """(prompt, messages, output) of one job: one in six a chat, no output when it failed; ``words``
    go into one of its texts each."""
    output = "" if failed else text_of(rng, 200, 2000)
    if rng.random() < 1 / 6:
        prompt = ""
        messages = [
            {"role": "system", "content": rng.choice(SYSTEM_PROMPTS)},
            {"role": "user", "content": text_of(rng, 50, 300)},
            {"role": "assistant", "content": text_of(rng, 100, 600)},
            {"role": "user", "content": text_of(rng, 50, 300)},
        ]
    else:
        prompt, messages = text_of(rng, 50, 400), None
    places = ("chat" if messages else "prompt",) + (() if failed else ("output",))
    for word in words:
        place = rng.choice(places)
        if place == "prompt":
            prompt = word_insert(rng, prompt, word)
        elif place == "output":
            output = word_insert(rng, output, word)
        else:
            turn = rng.choice(messages[1:])
            turn["content"] = word_insert(rng, turn["content"], word)
    return prompt, messages, output


@contextmanager
def creation_times_kept() -> Iterator[None]:
    """bulk_create stamps every row with the same now (auto_now_add): keep the times given instead,
    so the history is spread over months as a real one is."""
    field = GenerationJob._meta.get_field("created_at")
    field.auto_now_add = False
    try:
        yield
    finally:
        field.auto_now_add = True


def jobs_make(member: Membership, count: int = JOBS) -> None:
    """``count`` finished jobs of ``member``, over the last 180 days, sealed as the codec in place seals."""
    rng = random.Random(14)
    workspace = member.workspace
    period = quota_period_open(workspace=workspace, entitlements=entitlements_for(workspace))
    model = next(iter(settings.INFERENCE_MODELS))
    rare = set(rng.sample(range(count), count * RARE_JOBS // JOBS))
    now = timezone.now()
    jobs = []
    for index in range(count):
        words = [RARE_WORD] * (index in rare) + [COMMON_WORD] * (rng.random() < COMMON_SHARE)
        roll = rng.random()
        status = JobStatus.SUCCEEDED if roll < 0.88 else JobStatus.FAILED if roll < 0.95 else JobStatus.CANCELLED
        prompt, messages, output = job_texts(rng, words, failed=status == JobStatus.FAILED)
        created = now - timedelta(days=180) * (index / count)
        jobs.append(
            GenerationJob(
                user=member.user, workspace=workspace, model=model, prompt=prompt, messages=messages,
                max_new_tokens=512, status=status, output_text=output,
                error_message="The model ran out of memory." if status == JobStatus.FAILED else "",
                prompt_tokens=len(prompt) // 4 + 20, completion_tokens=len(output) // 4,
                tokens_reserved=600, tokens_charged=len(output) // 4 + 20, quota_period=period,
                queue="default", plan_slug="free", created_at=created, enqueued_at=created,
                started_at=created + timedelta(seconds=1), finished_at=created + timedelta(seconds=9),
            )
        )  # fmt: skip
    with transaction.atomic(), creation_times_kept():
        GenerationJob.objects.bulk_create(jobs, batch_size=500)


def jobs_sealed_check(member: Membership) -> None:
    """bulk_create must have sealed the texts (it runs each field's pre_save), not stored them in clear."""
    job = jobs_of(member).exclude(prompt=None).first()
    raw = jobs_of(member).filter(pk=job.pk).values_list("prompt", flat=True).get()
    if job.prompt.encode() in bytes(raw):
        raise RuntimeError("the prompts were stored in clear: bulk_create did not seal them")


def jobs_ready(member: Membership) -> bool:
    if jobs_of(member).count() != JOBS:
        return False
    try:
        return bool(jobs_of(member).exclude(prompt=None).first().prompt)
    except Undecryptable:
        return False


def setup_member() -> Membership:
    call_command("migrate", verbosity=0)
    call_command("seed", verbosity=0)
    user, _ = User.objects.get_or_create(email="bench-search@inkwell.local")
    member = membership_personal(user)
    if not jobs_ready(member):
        GenerationJob.objects.filter(user=user).delete()
        started = time.perf_counter()
        jobs_make(member)
        print(f"made {JOBS:,} jobs in {time.perf_counter() - started:.1f} s")
    jobs_sealed_check(member)
    return member


def search_once(member: Membership, query: str, status: str) -> tuple[float, float, int]:
    """The search as the history page runs it: the matching jobs, then page 1 (count and rows,
    whose titles are opened to be shown). (wall ms, this process's CPU ms, matches): on a busy
    machine the two part, and the CPU time is the work itself."""
    start, start_cpu = time.perf_counter(), time.process_time()
    page = Paginator(job_history(member, query=query, status=status), HISTORY_PAGE_SIZE).get_page(None)
    matches = page.paginator.count
    for job in page.object_list:
        job.title  # noqa: B018 - opening the shown texts is part of the page's cost
    return ms(time.perf_counter() - start), ms(time.process_time() - start_cpu), matches


def page_once(client: Client, query: str, status: str) -> float:
    start = time.perf_counter()
    response = client.get("/jobs/", {"q": query, "status": status})
    elapsed = ms(time.perf_counter() - start)
    if response.status_code != 200:
        raise RuntimeError(f"GET /jobs/?q={query}: {response.status_code}")
    return elapsed


def main(runs: int) -> None:
    embedded = None
    if settings.REDIS_EMBEDDED:
        embedded = EmbeddedRedis(port=settings.EMBEDDED_REDIS_PORT)
        embedded.start()
    try:
        member = setup_member()
        client = Client(HTTP_HOST="127.0.0.1")
        client.force_login(member.user)
        for _, query, status in QUERIES:  # warm up: caches, the data key, the query plans
            search_once(member, query, status)
            page_once(client, query, status)
        searches = {label: [] for label, _, _ in QUERIES}
        cpu = {label: [] for label, _, _ in QUERIES}
        pages = {label: [] for label, _, _ in QUERIES}
        matches = {}
        for _ in range(runs):  # the queries take turns, so machine noise falls on all of them
            for label, query, status in QUERIES:
                elapsed, used, matches[label] = search_once(member, query, status)
                searches[label].append(elapsed)
                cpu[label].append(used)
                pages[label].append(page_once(client, query, status))
    finally:
        if embedded is not None:
            embedded.stop()
    database = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    load = os.getloadavg()[0]
    print(f"database: {database}, {JOBS:,} jobs in one workspace, one member, {runs} runs per query")
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f} at the end (other processes share them)")
    print(f"job_history(...) then page 1 of {HISTORY_PAGE_SIZE} (count + rows), in-process:")
    print(f"{'query':<34}{'matches':>9}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'CPU p50 ms':>12}")
    for label, samples in searches.items():
        print(
            f"{label:<34}{matches[label]:>9,}{statistics.median(samples):>9.1f}{pct(samples, 0.95):>9.1f}"
            f"{max(samples):>9.1f}{statistics.median(cpu[label]):>12.1f}"
        )
    print("GET /jobs/?q=... through the test client (search + full page render):")
    print(f"{'query':<34}{'':>9}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}")
    for label, samples in pages.items():
        print(f"{label:<34}{'':>9}{statistics.median(samples):>9.1f}{pct(samples, 0.95):>9.1f}{max(samples):>9.1f}")
    worst = max(pct(samples, 0.95) for samples in searches.values())
    print(f"search p95 (worst query, {JOBS:,} jobs): {worst:.0f} ms — target ≤ {TARGET_MS} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
