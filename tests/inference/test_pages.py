"""The dashboard's pages through Django's test client (the browser journeys live in tests/e2e)."""

from __future__ import annotations

import csv
import io
import json

import pytest
import redis
from django.test import Client

from accounts.models import User
from accounts.workspaces import membership_personal, workspace_personal
from billing.models import QuotaPeriod, UsageRecord
from inference import streams
from inference.models import GenerationJob, JobStatus
from inference.outcome import JobOutcome
from inference.services import job_claim, job_finish, job_submit
from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db


def _finished(user, prompt="The lighthouse keeper", text="wrote a letter", model="inkwell-tiny"):
    job = job_submit(member=membership_personal(user), prompt=prompt, max_new_tokens=10)
    claimed = job_claim(job_id=job.pk, worker="test")
    job_finish(job=claimed, outcome=JobOutcome(text=text, completion_tokens=4, finish_reason="length"))
    return GenerationJob.objects.get(pk=job.pk)


@pytest.fixture
def signed_in(client, owner):
    client.force_login(owner)
    return client


def test_the_generate_page_offers_only_the_plans_models_and_shows_its_caps(signed_in):
    page = signed_in.get("/generate/").content.decode()

    assert '<option value="inkwell-tiny"' in page
    assert "Your plan allows up to 200." in page
    assert "Prompt limit on your plan: 100 tokens." in page


def test_submitting_the_form_queues_a_job_and_opens_its_page(signed_in, owner):
    response = signed_in.post(
        "/generate/",
        {"model": "inkwell-tiny", "mode": "prompt", "prompt": "Once upon a time", "max_new_tokens": 20,
         "temperature": 0.7, "top_p": 1, "top_k": 0, "repetition_penalty": 1, "stop": "\\n\\n"},
    )  # fmt: skip

    job = GenerationJob.objects.get(user=owner)
    assert response.status_code == 302 and response.url == f"/jobs/{job.pk}/"
    assert job.status == JobStatus.QUEUED and job.max_new_tokens == 20
    assert "Position 1 in the queue" in signed_in.get(response.url).content.decode()


def test_an_error_is_shown_next_to_its_field_and_nothing_is_queued(signed_in, owner):
    response = signed_in.post(
        "/generate/",
        {"model": "inkwell-tiny", "mode": "prompt", "prompt": "word " * 300, "max_new_tokens": 20,
         "temperature": 0.7, "top_p": 1, "top_k": 0, "repetition_penalty": 1},
    )  # fmt: skip

    assert response.status_code == 200
    form = response.context["form"]
    assert "your plan allows 100 per job" in form.errors["prompt"][0]
    assert not GenerationJob.objects.filter(user=owner).exists()


def test_the_json_submit_answers_the_stream_and_status_urls(signed_in):
    response = signed_in.post(
        "/generate/",
        {"model": "inkwell-tiny", "mode": "prompt", "prompt": "Hello", "max_new_tokens": 5, "temperature": 0,
         "top_p": 1, "top_k": 0, "repetition_penalty": 1},
        headers={"Accept": "application/json"},
    )  # fmt: skip

    body = response.json()
    assert response.status_code == 201
    assert body["stream_url"] == f"/jobs/{body['id']}/stream" and body["status_url"].endswith("/status/")


def test_the_token_counter_counts_with_the_models_tokenizer(signed_in):
    counted = signed_in.post("/generate/count/", {"model": "inkwell-tiny", "mode": "prompt", "prompt": "Hello there"})

    assert counted.json()["limit"] == 100
    assert (
        counted.json()["tokens"]
        == job_submit.__globals__["catalog"].prompt_token_ids("inkwell-tiny", prompt="Hello there").__len__()
    )


def test_history_searches_filters_and_hides_deleted_jobs(signed_in, owner):
    kept = _finished(owner, prompt="about the lighthouse")
    other = _finished(owner, prompt="about the market")
    signed_in.post(f"/jobs/{other.pk}/delete/")

    page = signed_in.get("/jobs/", {"q": "lighthouse", "status": "succeeded"}).content.decode()

    assert str(kept.pk) in page and str(other.pk) not in page
    assert str(other.pk) not in signed_in.get("/jobs/").content.decode()


def test_deleting_a_job_removes_its_texts_and_keeps_its_usage(signed_in, owner):
    job = _finished(owner, text="secret words")

    signed_in.post(f"/jobs/{job.pk}/delete/")

    job.refresh_from_db()
    assert (job.prompt, job.output_text, job.deleted_at is not None) == ("", "", True)
    assert UsageRecord.objects.get(job=job).tokens_charged == job.tokens_charged > 0
    assert QuotaPeriod.objects.get(workspace__personal_of=owner).used == job.tokens_charged
    assert signed_in.get(f"/jobs/{job.pk}/").status_code == 404


def test_downloads_carry_the_output(signed_in, owner):
    job = _finished(owner, text="the whole answer")

    text = signed_in.get(f"/jobs/{job.pk}/download.txt")
    markdown = signed_in.get(f"/jobs/{job.pk}/download.md")

    assert text.content.decode() == "the whole answer"
    assert text["Content-Disposition"] == f'attachment; filename="inkwell-{job.pk}.txt"'
    assert "## Output\n\nthe whole answer" in markdown.content.decode()
    other_format = signed_in.get(f"/jobs/{job.pk}/download.exe")
    assert other_format.status_code == 404
    assert "the whole answer" not in other_format.content.decode()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/jobs/{id}/"),
        ("get", "/jobs/{id}/status/"),
        ("get", "/jobs/{id}/download.txt"),
        ("get", "/jobs/{id}/download.md"),
        ("get", "/generate/?from={id}"),
        ("post", "/jobs/{id}/cancel/"),
        ("post", "/jobs/{id}/delete/"),
    ],
)
def test_another_users_job_is_a_404_and_nothing_changes(client, owner, method, path, other_user):
    job = _finished(owner)
    charged = job.tokens_charged
    # A job still in the queue as well: one that a cancel would stop, had it been allowed.
    waiting = job_submit(member=membership_personal(owner), prompt="Still waiting", max_new_tokens=10)
    ledger = QuotaPeriod.objects.filter(workspace__personal_of=owner).values("used", "reserved").get()
    client.force_login(other_user)

    response = getattr(client, method)(path.format(id=job.pk))
    waiting_response = getattr(client, method)(path.format(id=waiting.pk))

    assert response.status_code == 404
    assert waiting_response.status_code == 404
    for page in (response.content.decode(), waiting_response.content.decode()):
        assert not any(text in page for text in ("The lighthouse keeper", "wrote a letter", "Still waiting"))
    job.refresh_from_db()
    assert job.output_text == "wrote a letter" and job.deleted_at is None
    assert (job.status, job.prompt, job.tokens_charged) == (JobStatus.SUCCEEDED, "The lighthouse keeper", charged)
    waiting.refresh_from_db()
    assert (waiting.status, waiting.prompt, waiting.deleted_at) == (JobStatus.QUEUED, "Still waiting", None)
    assert QuotaPeriod.objects.filter(workspace__personal_of=owner).values("used", "reserved").get() == ledger


def test_the_usage_page_and_csv_show_the_users_tokens(signed_in, owner):
    job = _finished(owner)
    _finished(UserFactory(email="someone@example.com"))

    page = signed_in.get("/usage/").content.decode()
    export = signed_in.get("/usage/export.csv")
    reader = csv.DictReader(io.StringIO(export.content.decode()))
    rows = list(reader)

    assert f'data-testid="period-total">{job.tokens_charged}<' in page
    # One line per job of the user's personal workspace, naming the member who ran it.
    assert reader.fieldnames[:3] == ["created_at", "job_id", "member"]
    assert [(r["job_id"], r["member"], int(r["tokens_charged"])) for r in rows] == [
        (str(job.pk), owner.email, job.tokens_charged)
    ]
    assert f"inkwell-usage-{workspace_personal(owner).slug}.csv" in export["Content-Disposition"]


def test_deleting_the_account_removes_the_user_and_their_data(signed_in, owner):
    queued = job_submit(member=membership_personal(owner), prompt="Hello", max_new_tokens=5)
    _finished(owner)

    wrong = signed_in.post("/account/delete/", {"confirm_email": "nope@example.com"})
    assert "not this account" in wrong.content.decode()
    asked = signed_in.post("/account/delete/", {"confirm_email": owner.email})
    signed_in.post(asked.url, {"password": PASSWORD})  # allauth's re-authentication, then the deletion as sent

    assert not User.objects.filter(pk=owner.pk).exists()
    assert not GenerationJob.objects.filter(pk=queued.pk).exists()
    assert not UsageRecord.objects.exists()


def test_the_quota_banner_appears_at_eighty_percent(signed_in, owner):
    _finished(owner)
    QuotaPeriod.objects.filter(workspace__personal_of=owner).update(used=4_100)

    assert "You have used 82%" in signed_in.get("/generate/").content.decode()
    QuotaPeriod.objects.filter(workspace__personal_of=owner).update(used=5_000)
    assert "You have used your 5,000 tokens" in signed_in.get("/generate/").content.decode()


def test_replying_to_a_chat_carries_the_conversation_into_the_form(signed_in, owner):
    job = job_submit(
        member=membership_personal(owner),
        messages=[{"role": "user", "content": "Tell me about rivers"}],
        max_new_tokens=5,
    )
    claimed = job_claim(job_id=job.pk, worker="test")
    job_finish(
        job=claimed, outcome=JobOutcome(text="They run to the sea.", completion_tokens=5, finish_reason="length")
    )

    page = signed_in.get(f"/generate/?continue={job.pk}")

    form = page.context["form"]
    assert form["mode"].value() == "chat"
    assert [t["role"] for t in page.context["history_turns"]] == ["user", "assistant"]
    assert "They run to the sea." in page.content.decode()


@pytest.mark.parametrize(
    ("url", "shows"),
    [
        ("/account/", "owner@example.com"),
        ("/accounts/2fa/", "Two-Factor Authentication"),
        ("/accounts/sessions/", "Sessions"),
        ("/billing/", "Your plan: Free"),
        ("/usage/", 'data-testid="period-total">0<'),
    ],
)
def test_the_account_pages_render_for_a_signed_in_user(signed_in, url, shows):
    response = signed_in.get(url)

    assert response.status_code == 200
    assert shows in response.content.decode()


CHAT_FORM = {"model": "inkwell-tiny", "mode": "chat", "message": "And then?", "max_new_tokens": 5, "temperature": 0.7,
             "top_p": 1, "top_k": 0, "repetition_penalty": 1}  # fmt: skip


@pytest.mark.parametrize(
    ("history", "says"),
    [
        ("5", "The conversation could not be read"),
        ("{}", "The conversation could not be read"),
        ("[1, 2]", "The conversation could not be read"),
        ('[{"role": "wizard", "content": "x"}]', "The conversation could not be read"),
        ("[" * 100_000, "The conversation could not be read"),
        ('[{"role": "user", "content": "\\ud800"}]', "invalid Unicode (a lone surrogate)"),
    ],
    ids=["number", "object", "not-turns", "bad-role", "deep", "lone-surrogate"],
)
def test_a_conversation_that_cannot_be_read_is_a_form_error_not_a_server_error(signed_in, owner, history, says):
    page = signed_in.post("/generate/", {**CHAT_FORM, "history": history})
    as_json = signed_in.post("/generate/", {**CHAT_FORM, "history": history}, headers={"Accept": "application/json"})

    assert page.status_code == 200
    assert says in page.context["form"].non_field_errors()[0]
    assert says in page.content.decode()
    assert as_json.status_code == 400 and says in as_json.json()["errors"]["__all__"][0]["message"]
    assert not GenerationJob.objects.filter(user=owner).exists()


def test_a_readable_conversation_is_shown_again_when_the_form_has_an_error(signed_in):
    history = '[{"role": "user", "content": "Tell me about rivers"}, {"role": "assistant", "content": "They flow."}]'

    page = signed_in.post("/generate/", {**CHAT_FORM, "history": history, "max_new_tokens": 9_999})

    assert [t["content"] for t in page.context["history_turns"]] == ["Tell me about rivers", "They flow."]


@pytest.mark.parametrize("temperature", ["1e-45", "-0", "0.001"])
def test_a_tiny_temperature_from_the_form_is_stored_as_greedy_zero(signed_in, owner, temperature):
    signed_in.post(
        "/generate/",
        {"model": "inkwell-tiny", "mode": "prompt", "prompt": "Hello", "max_new_tokens": 5, "temperature": temperature,
         "top_p": 1, "top_k": 0, "repetition_penalty": 1},
    )  # fmt: skip

    assert GenerationJob.objects.get(user=owner).temperature == 0.0


@pytest.mark.parametrize(
    ("field", "value"), [("seed", "9" * 30), ("temperature", "nan"), ("top_k", "1e400"), ("max_new_tokens", "inf")]
)
def test_an_impossible_number_in_the_form_is_an_error_next_to_its_field(signed_in, owner, field, value):
    form = {"model": "inkwell-tiny", "mode": "prompt", "prompt": "Hello", "max_new_tokens": 5, "temperature": 0.7,
            "top_p": 1, "top_k": 0, "repetition_penalty": 1}  # fmt: skip

    response = signed_in.post("/generate/", {**form, field: value})

    assert response.status_code == 200 and field in response.context["form"].errors
    assert not GenerationJob.objects.filter(user=owner).exists()


def test_the_token_counter_refuses_more_than_a_job_may_hold(signed_in):
    counted = signed_in.post("/generate/count/", {"model": "inkwell-tiny", "mode": "prompt", "prompt": "a" * 200_001})
    chat = signed_in.post(
        "/generate/count/",
        {"model": "inkwell-tiny", "mode": "chat", "message": "b" * 100_000,
         "history": json.dumps([{"role": "user", "content": "a" * 100_001}])},
    )  # fmt: skip

    assert counted.status_code == 413 and "over 200,000 characters" in counted.json()["error"]
    assert chat.status_code == 413 and "over 200,000 characters" in chat.json()["error"]


@pytest.mark.parametrize(
    "history", ["[" * 100_000, '[{"role": "user", "content": "\\ud800"}]', "5"], ids=["deep", "surrogate", "number"]
)
def test_the_token_counter_refuses_a_conversation_it_cannot_read(signed_in, history):
    counted = signed_in.post(
        "/generate/count/", {"model": "inkwell-tiny", "mode": "chat", "message": "Hi", "history": history}
    )

    assert counted.status_code == 400 and "conversation" in counted.json()["error"]


def test_the_token_counter_is_rate_limited_per_user(signed_in, client, settings):
    settings.TOKEN_COUNTS_PER_MINUTE = 3
    body = {"model": "inkwell-tiny", "mode": "prompt", "prompt": "Hello there"}
    answers = [signed_in.post("/generate/count/", body) for _ in range(4)]
    other = Client()
    other.force_login(UserFactory(email="counter@example.com"))

    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert "Counting paused" in answers[-1].json()["error"] and 0 < answers[-1].json()["retry_after"] <= 60
    counted_for_other = other.post("/generate/count/", body)
    assert counted_for_other.status_code == 200
    assert counted_for_other.json()["tokens"] == answers[0].json()["tokens"] > 0


def test_the_token_counter_counts_without_redis(signed_in, monkeypatch, settings):
    settings.TOKEN_COUNTS_PER_MINUTE = 1
    dead = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    monkeypatch.setattr(streams, "client", lambda: dead)

    answers = [signed_in.post("/generate/count/", {"model": "inkwell-tiny", "prompt": "Hi"}) for _ in range(2)]

    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json()["tokens"] == answers[1].json()["tokens"] > 0


def test_surrogate_bytes_in_a_form_field_arrive_as_the_replacement_character(signed_in, owner):
    # A form field cannot carry a lone surrogate: its UTF-8 bytes are invalid and decode to U+FFFD.
    body = "model=inkwell-tiny&mode=prompt&prompt=Hi%ED%A0%80&max_new_tokens=5&temperature=0&top_p=1&top_k=0"
    signed_in.post("/generate/", body + "&repetition_penalty=1", content_type="application/x-www-form-urlencoded")

    assert GenerationJob.objects.get(user=owner).prompt == "Hi\ufffd\ufffd\ufffd"


def test_rerun_or_continue_with_a_malformed_id_is_a_404(signed_in):
    assert signed_in.get("/generate/?from=abc").status_code == 404
    assert signed_in.get("/generate/?continue=abc").status_code == 404


@pytest.mark.parametrize("history", ["5", '{"a": 1}', '[{"role": 1}]'])
def test_the_token_counter_refuses_a_malformed_conversation(signed_in, history):
    response = signed_in.post(
        "/generate/count/", {"model": "inkwell-tiny", "mode": "chat", "history": history, "message": "Hi"}
    )

    assert response.status_code == 400
    assert "error" in response.json()
    assert "The conversation could not be read" in response.json()["error"]
