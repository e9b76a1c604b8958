"""Event streams against the real ASGI server: how many one user may hold, that closing one frees
its slot, and that a stream still ends when Redis is gone (it reads the job's row instead)."""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.parse

import pytest
import redis
from django.conf import settings
from django.test import Client

from accounts.workspaces import membership_personal
from billing.models import QuotaPeriod
from inference.models import GenerationJob
from inference.outcome import JobOutcome
from inference.services import job_claim, job_finish, job_submit
from tests.factories import ApiKeyFactory, PlanFactory, UserFactory
from tests.support import free_port, start_web, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

STREAM_CAP = 2


def _serve(artifacts_dir, name: str, **env: str):
    port = free_port()
    web = start_web(artifacts_dir / "logs" / name, port, **env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _get(url, "/").status == 200, timeout=60, what=name, process=web.process)
    except Exception:
        web.stop()
        raise RuntimeError(f"{name} did not start:\n" + web.log()[-3000:]) from None
    return url, web


@pytest.fixture(scope="module")
def capped_server(django_db_setup, django_db_blocker, artifacts_dir):
    """A web server that allows each user STREAM_CAP streams at once."""
    with django_db_blocker.unblock():
        url, web = _serve(artifacts_dir, "capped", MAX_STREAMS_PER_USER=str(STREAM_CAP))
    yield url
    web.stop()


@pytest.fixture(scope="module")
def redisless_server(django_db_setup, django_db_blocker, artifacts_dir):
    """A web server whose Redis (streams, rate limits, stream slots, broker) is a closed port."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with django_db_blocker.unblock():
        url, web = _serve(artifacts_dir, "redisless", REDIS_URL=dead, CELERY_BROKER_URL=dead, MAX_STREAMS_PER_USER="1")
    yield url
    web.stop()


@pytest.fixture(scope="module")
def silent_redis_server(django_db_setup, django_db_blocker, artifacts_dir):
    """A web server whose Redis accepts connections and never answers (a host gone from the
    network looks like this: no refusal, just silence)."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1000)  # never accepted: the kernel completes the handshakes, nobody replies
    dead = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
    with django_db_blocker.unblock():
        url, web = _serve(artifacts_dir, "silent-redis", REDIS_URL=dead, CELERY_BROKER_URL=dead)
    yield url
    web.stop()
    silent.close()


@pytest.fixture
def owner(tiny_model_path):
    PlanFactory(
        slug="free", is_default=True, api_access=True, max_new_tokens=50, max_prompt_tokens=200,
        max_concurrent_jobs=20, requests_per_minute=100,
    )  # fmt: skip
    return UserFactory(email="streamer@example.com")


@pytest.fixture
def api_key(owner) -> str:
    return ApiKeyFactory(user=owner, name="streams").raw


_opened: list = []


@pytest.fixture(autouse=True)
def _close_what_the_test_opened():
    """A test that fails half-way leaves no stream open behind it for the next."""
    yield
    while _opened:
        _close(_opened.pop())


def _request(url: str, method: str, path: str, body: str | None = None, headers: dict | None = None, timeout=10):
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    response.connection = connection  # closed with the response
    _opened.append(response)
    return response


def _get(url: str, path: str, headers: dict | None = None):
    return _request(url, "GET", path, headers=headers)


def _post(url: str, path: str, body: dict, headers: dict):
    headers = {"Content-Type": "application/json", **headers}
    return _request(url, "POST", path, json.dumps(body), headers, timeout=30)


def _close(response) -> None:
    response.connection.close()
    response.close()


def _bearer(api_key: str) -> dict:
    return {"Authorization": f"Bearer {api_key}"}


def _session_cookie(user) -> dict:
    client = Client()
    client.force_login(user)
    return {"Cookie": f"sessionid={client.cookies['sessionid'].value}"}


def _events(response, until: str = "end", timeout: float = 10) -> tuple[list[tuple[str, dict]], float]:
    """The (event, data) pairs of a server-sent-events response up to ``until``, and how long
    that took."""
    started = time.monotonic()
    response.connection.sock.settimeout(timeout)
    events, name = [], None
    while True:
        line = response.readline().decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[len("data: ") :])))
            if name == until:
                return events, time.monotonic() - started
        elif not line and response.isclosed():
            return events, time.monotonic() - started


def _finish(job, text: str) -> None:
    claimed = job_claim(job_id=job.pk, worker="test")
    job_finish(job=claimed, outcome=JobOutcome(text=text, completion_tokens=3, finish_reason="length"))


def test_a_user_past_the_stream_cap_gets_429_in_the_envelope_and_nothing_leaks(capped_server, api_key, owner):
    job = job_submit(member=membership_personal(owner), prompt="Once upon a time", max_new_tokens=10)
    path = f"/api/v1/jobs/{job.pk}/stream"
    open_streams = [_get(capped_server, path, _bearer(api_key)) for _ in range(STREAM_CAP)]

    refused = _get(capped_server, path, _bearer(api_key))
    chat = _post(capped_server, "/v1/chat/completions", {
        "model": "inkwell-tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "stream": True,
    }, _bearer(api_key))  # fmt: skip

    assert [s.status for s in open_streams] == [200] * STREAM_CAP
    assert refused.status == 429
    error = json.loads(refused.read())["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "too_many_streams")
    assert f"You have {STREAM_CAP} event streams open" in error["message"]
    assert chat.status == 429 and json.loads(chat.read())["error"]["code"] == "too_many_streams"
    # The refused /v1 stream queued nothing and reserved nothing.
    assert GenerationJob.objects.filter(user=owner).count() == 1
    assert QuotaPeriod.objects.get(workspace__personal_of=owner).reserved == job.tokens_reserved


def test_closing_a_stream_frees_its_slot_for_the_next(capped_server, api_key, owner):
    job = job_submit(member=membership_personal(owner), prompt="Once upon a time", max_new_tokens=10)
    path = f"/api/v1/jobs/{job.pk}/stream"
    first, second = _get(capped_server, path, _bearer(api_key)), _get(capped_server, path, _bearer(api_key))
    refused = _get(capped_server, path, _bearer(api_key))
    assert refused.status == 429
    _close(refused)

    _close(first)
    _close(second)

    # The server notices each disconnect and gives the slots back: both can be taken again.
    reopened = []

    def reopen() -> bool:
        response = _get(capped_server, path, _bearer(api_key))
        if response.status == 200:
            reopened.append(response)
        else:
            _close(response)
        return len(reopened) == STREAM_CAP

    wait_until(reopen, timeout=5, what="the closed streams' slots")


def test_a_stream_that_ends_with_its_job_frees_its_slot(capped_server, api_key, owner):
    jobs = [
        job_submit(member=membership_personal(owner), prompt="Once upon a time", max_new_tokens=10)
        for _ in range(STREAM_CAP)
    ]
    streams = [_get(capped_server, f"/api/v1/jobs/{job.pk}/stream", _bearer(api_key)) for job in jobs]

    for job, stream in zip(jobs, streams, strict=True):
        _finish(job, "and then")
        assert _events(stream)[0][-1][0] == "end"
        stream.read()  # to the end of the response: the slot is given back before it

    fresh = _get(capped_server, f"/api/v1/jobs/{jobs[0].pk}/stream", _bearer(api_key))
    assert fresh.status == 200
    events = _events(fresh)[0]  # the finished job's text and end, straight away
    assert events[0] == ("snapshot", {"text": "and then"}) and events[-1][1]["status"] == "succeeded"


def test_the_page_stream_counts_against_the_same_cap_and_is_429_past_it(capped_server, api_key, owner):
    job = job_submit(member=membership_personal(owner), prompt="Once upon a time", max_new_tokens=10)
    cookie = _session_cookie(owner)
    page_stream = _get(capped_server, f"/jobs/{job.pk}/stream", cookie)
    api_stream = _get(capped_server, f"/api/v1/jobs/{job.pk}/stream", _bearer(api_key))

    refused = _get(capped_server, f"/jobs/{job.pk}/stream", cookie)

    assert (page_stream.status, api_stream.status, refused.status) == (200, 200, 429)
    assert "event streams open" in refused.read().decode()
    assert refused.getheader("Retry-After") == "5"


def test_an_idle_stream_waits_on_one_redis_connection_instead_of_reconnecting(capped_server, api_key, owner):
    job = job_submit(member=membership_personal(owner), prompt="Once upon a time", max_new_tokens=10)
    observer = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
    database = str(observer.connection_pool.connection_kwargs.get("db", 0))
    opened = time.monotonic()
    assert _get(capped_server, f"/api/v1/jobs/{job.pk}/stream", _bearer(api_key)).status == 200

    readers: set[str] = set()
    deadline = time.monotonic() + 13  # past two of redis-py's 5-second socket timeouts
    while time.monotonic() < deadline:
        waited = time.monotonic() - opened
        # Only connections that have read since the stream opened: another server's pool may still
        # list an earlier test's XREAD as the last command of a connection idle ever since.
        readers |= {
            c["id"]
            for c in observer.client_list()
            if c["db"] == database and c["cmd"] == "xread" and int(c["idle"]) <= waited
        }
        time.sleep(0.5)

    assert len(readers) == 1


def test_another_users_stream_is_404_and_takes_no_slot(capped_server, api_key, owner, other_user):
    other = job_submit(member=membership_personal(other_user), prompt="Hi", max_new_tokens=5)

    for _ in range(STREAM_CAP + 1):
        response = _get(capped_server, f"/api/v1/jobs/{other.pk}/stream", _bearer(api_key))
        assert response.status == 404
        assert json.loads(response.read())["error"]["code"] == "not_found"
        _close(response)
    mine = job_submit(member=membership_personal(owner), prompt="Hi", max_new_tokens=5)
    response = _get(capped_server, f"/api/v1/jobs/{mine.pk}/stream", _bearer(api_key))
    assert response.status == 200
    assert _events(response, until="status")[0] == [("status", {"status": "queued"})]


def test_without_redis_the_rest_stream_reads_the_database_and_ends(redisless_server, api_key, owner):
    job = job_submit(member=membership_personal(owner), prompt="Once upon a time", max_new_tokens=10)
    stream = _get(redisless_server, f"/api/v1/jobs/{job.pk}/stream", _bearer(api_key))
    # Redis is down, so there is no slot to count: a second stream past the cap of 1 is allowed.
    second = _get(redisless_server, f"/api/v1/jobs/{job.pk}/stream", _bearer(api_key))
    assert (stream.status, second.status) == (200, 200)
    _close(second)
    assert _events(stream, until="status")[0] == [("status", {"status": "queued"})]

    _finish(job, "the keeper wrote")
    events, took = _events(stream)

    assert ("snapshot", {"text": "the keeper wrote"}) in events
    assert events[-1][0] == "end" and events[-1][1]["status"] == "succeeded"
    assert events[-1][1]["completion_tokens"] == 3
    assert took < 4


def test_a_stream_whose_redis_never_answers_still_ends_from_the_database(silent_redis_server, api_key, owner):
    job = job_submit(member=membership_personal(owner), prompt="Once upon a time", max_new_tokens=10)
    stream = _get(silent_redis_server, f"/api/v1/jobs/{job.pk}/stream", _bearer(api_key))
    assert stream.status == 200
    _events(stream, until="status")

    _finish(job, "the keeper wrote")
    events, took = _events(stream, timeout=20)

    assert [name for name, _ in events] == ["snapshot", "end"]
    assert events[0][1] == {"text": "the keeper wrote"} and took < 8


def test_without_redis_the_page_stream_reads_the_database_and_ends(redisless_server, owner):
    job = job_submit(member=membership_personal(owner), prompt="Once upon a time", max_new_tokens=10)
    stream = _get(redisless_server, f"/jobs/{job.pk}/stream", _session_cookie(owner))
    assert stream.status == 200
    _events(stream, until="status")

    _finish(job, "a letter")
    events, took = _events(stream)

    assert [name for name, _ in events] == ["snapshot", "end"]
    assert events[0][1] == {"text": "a letter"} and took < 4


def test_without_redis_a_streamed_completion_still_ends_with_the_text(redisless_server, api_key, owner):
    response = _post(redisless_server, "/v1/completions", {
        "model": "inkwell-tiny", "prompt": "Once upon a time", "max_tokens": 5, "stream": True,
    }, _bearer(api_key))  # fmt: skip
    assert response.status == 200
    job = GenerationJob.objects.get(user=owner)

    _finish(job, "there was")
    started = time.monotonic()
    body = b""
    while not body.endswith(b"data: [DONE]\n\n") and time.monotonic() - started < 10:
        body += response.read1(65536)

    chunks = [json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: {")]
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == "there was"
    assert body.endswith(b"data: [DONE]\n\n") and time.monotonic() - started < 4


def test_without_redis_requests_degrade_instead_of_failing(redisless_server, api_key, owner):
    created = _post(redisless_server, "/api/v1/jobs", {"prompt": "Hi", "max_new_tokens": 5}, _bearer(api_key))
    usage = _get(redisless_server, "/api/v1/usage", _bearer(api_key))
    client = Client()
    client.force_login(owner)
    csrf = client.get("/generate/").cookies["csrftoken"].value
    counted = _request(
        redisless_server, "POST", "/generate/count/", urllib.parse.urlencode({"model": "inkwell-tiny", "prompt": "Hi"}),
        {"Content-Type": "application/x-www-form-urlencoded", "X-CSRFToken": csrf,
         "Cookie": f"sessionid={client.cookies['sessionid'].value}; csrftoken={csrf}"},
    )  # fmt: skip

    assert created.status == 201 and json.loads(created.read())["status"] == "queued"
    assert usage.status == 200 and usage.getheader("x-ratelimit-limit-requests") == "100"
    assert counted.status == 200 and json.loads(counted.read())["tokens"] > 0
