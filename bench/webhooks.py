"""Stripe webhooks through the live endpoint: 500 signed deliveries (350 distinct events, 100 late
duplicates, and 50 events whose two copies arrive at the same moment), then the exact effects are
checked: one row per event id, every event applied, one allowance per paid period.

Usage:  .venv/bin/python bench/webhooks.py [customers]
Uses DATABASE_URL and REDIS_URL when set; otherwise SQLite in var/ and an embedded Redis. Billing
runs in sandbox mode (no Stripe key), whose signing secret the events are signed with.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py is named like the standard library's queue module: keep this folder off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import http.client
import os
import random
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings")
os.environ.setdefault("DATABASE_URL", f"sqlite:///{ROOT / 'var' / 'bench-webhooks.sqlite3'}")
os.environ.setdefault("INKWELL_EMBEDDED_REDIS_PORT", "6397")

import django

django.setup()

from django.conf import settings
from django.core.management import call_command

from accounts.models import User
from accounts.workspaces import workspace_personal
from billing import sandbox
from billing.models import BillingCustomer, Plan, QuotaPeriod, Subscription, WebhookEvent
from billing.stripe_client import event_payload, sign
from saas.embedded import EmbeddedRedis, die_with_parent, port_is_open

PORT = 8798
DAY = 86400
THREADS = 8


def setup(customers: int) -> tuple[Plan, list[User]]:
    call_command("migrate", verbosity=0)
    call_command("seed", verbosity=0)
    plan = Plan.objects.get(slug="pro")
    users = []
    for i in range(customers):
        user, _ = User.objects.get_or_create(email=f"bench-webhooks-{i}@inkwell.local")
        workspace = workspace_personal(user)
        Subscription.objects.filter(workspace=workspace).delete()
        QuotaPeriod.objects.filter(workspace=workspace).delete()
        BillingCustomer.objects.update_or_create(workspace=workspace, defaults={"stripe_customer_id": f"cus_bench_{i}"})
        users.append(user)
    WebhookEvent.objects.filter(stripe_event_id__startswith="evt_bench_").delete()
    return plan, users


def customer_events(user: User, index: int, plan: Plan, now: int) -> list[str]:
    """Seven distinct events of one customer's month, in the order Stripe sends them."""
    first = (now - 40 * DAY, now - 10 * DAY)
    second = (now - 10 * DAY, now + 20 * DAY)

    def subscription(period, **changes) -> dict:
        obj = sandbox.subscription_object(
            subscription_id=f"sub_bench_{index}", customer=f"cus_bench_{index}", price=plan.stripe_price_id,
            workspace_id=workspace_personal(user).pk,
            status="active", period_start=_dt(period[0]), period_end=_dt(period[1]),
        )  # fmt: skip
        obj.update(changes)
        return obj

    def event(kind: str, obj: dict, created: int) -> str:
        return event_payload(event_id=f"evt_bench_{uuid.uuid4().hex}", event_type=kind, obj=obj, created=created)

    renewal = subscription(second)
    paid_second = sandbox.invoice_object(subscription=renewal, status="paid", amount=plan.price_cents)
    return [
        event("customer.subscription.created", subscription(first), now - 40 * DAY),
        event(
            "invoice.paid",
            sandbox.invoice_object(subscription=subscription(first), status="paid", amount=plan.price_cents),
            now - 40 * DAY + 1,
        ),
        event("customer.subscription.updated", subscription(first, cancel_at_period_end=True), now - 20 * DAY),
        event("customer.subscription.updated", subscription(first), now - 19 * DAY),
        event("customer.subscription.updated", renewal, now - 10 * DAY),
        event("invoice.paid", paid_second, now - 10 * DAY + 3600),
        event("invoice.paid", paid_second, now - 10 * DAY + 3700),  # the same invoice, another event id
    ]


def _dt(timestamp: int):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, tz=UTC)


def deliver(payload: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
    try:
        conn.request(
            "POST", "/billing/webhook/", body=payload,
            headers={"Content-Type": "application/json", "Stripe-Signature": sign(payload)},
        )  # fmt: skip
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def deliver_until_accepted(payload: str) -> int:
    """As Stripe does: a 5xx is delivered again (an invoice may beat its subscription)."""
    for _ in range(20):
        status = deliver(payload)
        if status < 500:
            return status
        time.sleep(0.2)
    return status


def deliver_pair(payload: str) -> list[int]:
    start = threading.Barrier(2)
    statuses: list[int] = []

    def one() -> None:
        start.wait()
        statuses.append(deliver_until_accepted(payload))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def run(customers: int) -> int:
    plan, users = setup(customers)
    now = int(time.time())
    flows = [customer_events(user, i, plan, now) for i, user in enumerate(users)]
    distinct = [payload for flow in flows for payload in flow]
    rng = random.Random(7)
    paired = set(rng.sample(range(len(distinct)), min(50, len(distinct))))
    duplicates = rng.sample(distinct, min(100, len(distinct)))
    statuses: list[int] = []
    lock = threading.Lock()

    def customer_flow(flow_index: int) -> None:
        for offset, payload in enumerate(flows[flow_index]):
            index = flow_index * 7 + offset
            got = deliver_pair(payload) if index in paired else [deliver_until_accepted(payload)]
            with lock:
                statuses.extend(got)

    started = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(customer_flow, range(len(flows))))
    with ThreadPoolExecutor(THREADS) as pool:
        statuses.extend(pool.map(deliver_until_accepted, duplicates))
    elapsed = time.perf_counter() - started

    deliveries = len(statuses)
    rows = WebhookEvent.objects.filter(stripe_event_id__startswith="evt_bench_")
    failures = []
    if any(status != 200 for status in statuses):
        failures.append(f"non-200 answers: {sorted({s for s in statuses if s != 200})}")
    if rows.count() != len(distinct):
        failures.append(f"{rows.count()} event rows for {len(distinct)} distinct events")
    if rows.exclude(status="processed").exists():
        failures.append(f"{rows.exclude(status='processed').count()} events not processed")
    for user in users:
        allowances = sorted(QuotaPeriod.objects.filter(workspace__personal_of=user).values_list("allowance", flat=True))
        if allowances != [plan.monthly_token_allowance] * 2:
            failures.append(f"{user.email}: allowances {allowances}, expected two of {plan.monthly_token_allowance}")
        subscription = Subscription.objects.get(workspace__personal_of=user)
        if subscription.paid_period_start != subscription.current_period_start or subscription.cancel_at_period_end:
            failures.append(f"{user.email}: subscription not on its paid renewal")
    database = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    print(f"database: {database}, one uvicorn process, {THREADS} client threads, {customers} customers")
    print(f"{'deliveries':>11}{'distinct':>10}{'late dups':>11}{'same-moment':>13}{'seconds':>9}{'events/s':>10}")
    print(f"{deliveries:>11}{len(distinct):>10}{len(duplicates):>11}{len(paired):>13}{elapsed:>9.2f}"
          f"{deliveries / elapsed:>10.1f}")  # fmt: skip
    periods = QuotaPeriod.objects.filter(workspace__personal_of__in=users).count()
    print(
        f"effects: {rows.count()} event rows (one per event id), {periods} ledger periods "
        f"for {len(users) * 2} paid periods"
    )
    for failure in failures[:20]:
        print("FAIL", failure)
    print("all checks passed" if not failures else f"{len(failures)} check(s) failed")
    return 1 if failures else 0


def main(customers: int) -> int:
    embedded = None
    if settings.REDIS_EMBEDDED:
        embedded = EmbeddedRedis(port=settings.EMBEDDED_REDIS_PORT)
        embedded.start()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "saas.asgi:application", "--port", str(PORT), "--lifespan", "off",
         "--log-level", "warning", "--no-access-log"],
        cwd=ROOT, env={**os.environ, "REDIS_URL": settings.REDIS_URL}, preexec_fn=die_with_parent,
    )  # fmt: skip
    try:
        for _ in range(100):
            if port_is_open(PORT):
                break
            time.sleep(0.1)
        return run(customers)
    finally:
        server.terminate()
        server.wait()
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50))
