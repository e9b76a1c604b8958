"""The official openai client, unchanged, against the live server and a real worker."""

from __future__ import annotations

import openai
import pytest

from billing.models import QuotaPeriod
from inference.models import GenerationJob

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client(web_server, celery_worker, api_key):
    return openai.OpenAI(base_url=web_server.url + "/v1", api_key=api_key, max_retries=0, timeout=60)


def test_models_lists_the_plans_models(client):
    assert [m.id for m in client.models.list()] == ["inkwell-tiny"]


def test_a_completion_is_a_job_charged_like_any_other(client, owner):
    completion = client.completions.create(
        model="inkwell-tiny", prompt="Once upon a time", max_tokens=12, temperature=0
    )

    job = GenerationJob.objects.get(user=owner)
    assert completion.choices[0].text == job.output_text != ""
    assert completion.choices[0].finish_reason in ("length", "stop")
    assert completion.usage.completion_tokens == job.completion_tokens
    assert completion.usage.total_tokens == job.tokens_charged
    assert job.source == "openai"
    assert QuotaPeriod.objects.get(workspace__personal_of=owner).used == job.tokens_charged


def test_a_chat_completion_goes_through_the_chat_template(client, owner):
    reply = client.chat.completions.create(
        model="inkwell-tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=8, temperature=0
    )

    job = GenerationJob.objects.get(user=owner)
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == job.output_text
    assert job.messages == [{"role": "user", "content": "Hello"}]
    assert reply.usage.prompt_tokens == job.prompt_tokens


def test_a_streamed_chat_ends_with_usage_and_done(client, owner):
    stream = client.chat.completions.create(
        model="inkwell-tiny",
        messages=[{"role": "user", "content": "Tell me a story"}],
        max_tokens=30,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    job = GenerationJob.objects.get(user=owner)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == job.output_text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("length", "stop")
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == job.tokens_charged


def test_a_bad_key_raises_an_authentication_error(web_server):
    bad = openai.OpenAI(base_url=web_server.url + "/v1", api_key="ink_not-a-key", max_retries=0)

    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_quota_and_rate_limits_raise_distinct_exceptions(client, owner, api_plan):
    client.completions.create(model="inkwell-tiny", prompt="Hi", max_tokens=2)
    QuotaPeriod.objects.filter(workspace__personal_of=owner).update(used=100_000)

    with pytest.raises(openai.APIStatusError) as no_quota:
        client.completions.create(model="inkwell-tiny", prompt="Hi", max_tokens=2)
    QuotaPeriod.objects.filter(workspace__personal_of=owner).update(used=0)
    api_plan.requests_per_minute = 3
    api_plan.save()
    with pytest.raises(openai.RateLimitError) as limited:
        # The window is the clock minute: even if a minute turns over during the loop, the
        # limit is reached within twice the limit plus one request.
        for _ in range(2 * 3 + 1):
            client.completions.create(model="inkwell-tiny", prompt="Hi", max_tokens=2)

    assert no_quota.value.status_code == 402 and no_quota.value.code == "insufficient_quota"
    assert not isinstance(no_quota.value, openai.RateLimitError)
    assert limited.value.code == "rate_limit_exceeded"


def test_an_unsupported_field_is_a_clear_error(client):
    with pytest.raises(openai.BadRequestError) as error:
        client.completions.create(model="inkwell-tiny", prompt="Hi", max_tokens=2, logprobs=3)

    assert "'logprobs' is not supported" in error.value.message


def test_a_key_sent_in_the_url_is_refused_and_never_logged(web_server, api_key):
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{web_server.url}/v1/models?api_key={api_key}", timeout=10)

    assert refused.value.code == 401
    assert "api_key_in_url" in refused.value.read().decode()
    assert api_key not in web_server.process.log()


def test_the_rest_stream_follows_a_job_with_an_api_key(web_server, celery_worker, api_key, owner):
    import json
    import urllib.request

    def call(method, path, body=None):
        request = urllib.request.Request(
            web_server.url + path,
            data=json.dumps(body).encode() if body else None,
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
            method=method,
        )
        return urllib.request.urlopen(request, timeout=60)

    created = json.loads(call("POST", "/api/v1/jobs", {"prompt": "Once", "max_new_tokens": 10}).read())
    events = call("GET", created["stream_url"]).read().decode()

    job = GenerationJob.objects.get(pk=created["id"])
    assert events.rstrip().splitlines()[-2] == "event: end"
    assert json.loads(events.rstrip().splitlines()[-1][len("data: ") :])["completion_tokens"] == job.completion_tokens
