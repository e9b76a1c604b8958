"""Malformed and hostile request bodies on the REST and the OpenAI-compatible endpoints, sent to
the live ASGI server: each is a 400 in the one error envelope that names what is wrong, never a
500, and nothing is queued."""

from __future__ import annotations

import http.client
import json
import math
import urllib.parse
from dataclasses import dataclass

import pytest

from billing.models import QuotaPeriod
from inference.models import GenerationJob

pytestmark = pytest.mark.django_db(transaction=True)

REST, COMPLETIONS, CHAT = "/api/v1/jobs", "/v1/completions", "/v1/chat/completions"
ENDPOINTS = [REST, COMPLETIONS, CHAT]
# A body that is fine on each endpoint, to spoil one field at a time.
VALID = {
    REST: '{"prompt": "Once upon a time", "max_new_tokens": 5, %s}',
    COMPLETIONS: '{"model": "inkwell-tiny", "prompt": "Once upon a time", "max_tokens": 5, %s}',
    CHAT: '{"model": "inkwell-tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, %s}',
}


@dataclass
class Reply:
    status: int
    body: bytes

    def json(self):
        return json.loads(self.body)


@pytest.fixture
def send(web_server, api_key):
    """POST a raw body to the live server with the owner's key."""
    parts = urllib.parse.urlsplit(web_server.url)

    def send(path: str, body: str | bytes, content_type: str = "application/json") -> Reply:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            raw = body.encode() if isinstance(body, str) else body
            connection.request("POST", path, raw, {"Authorization": f"Bearer {api_key}", "Content-Type": content_type})
            response = connection.getresponse()
            return Reply(response.status, response.read())
        finally:
            connection.close()

    return send


def _refused(response: Reply, *, param: str | None, says: str) -> dict:
    assert response.status == 400, response.body[:300]
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert says in error["message"]
    assert not GenerationJob.objects.exists()
    return error


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(
    "body",
    ["[" * 100_000, '{"a":' * 100_000, '{"prompt": ' + "[" * 5_000 + "]" * 5_000 + "}"],
    ids=["arrays", "objects", "in-a-field"],
)
def test_a_body_nested_too_deeply_is_a_400_not_a_recursion_error(send, path, body):
    _refused(send(path, body), param=None, says="nests too deeply")


def test_brackets_inside_a_string_are_text_not_nesting(send):
    response = send(REST, json.dumps({"prompt": "[{" * 5_000, "max_new_tokens": 5}))

    # Refused as too long for the plan: so it was read and counted, not refused as JSON.
    _refused(response, param="prompt", says="your plan allows 200 per job")


@pytest.mark.parametrize("path", [COMPLETIONS, CHAT])
@pytest.mark.parametrize("model", [["x"], {"name": "x"}, 5, None, True])
def test_a_model_that_is_not_a_string_is_a_400(send, path, model):
    body = VALID[path].replace('"model": "inkwell-tiny", ', "") % f'"model": {json.dumps(model)}'

    _refused(send(path, body), param="model", says="model must be a string")


@pytest.mark.parametrize(
    ("path", "field", "param"),
    [
        (REST, '"stop": ["\\ud800"]', "stop[0]"),
        (REST, '"model": "\\udfff"', "model"),
        (COMPLETIONS, '"stop": "x\\ud800"', "stop"),
        (COMPLETIONS, '"user": "\\ud800"', "user"),
        (CHAT, '"stop": ["a", "\\udc00b"]', "stop[1]"),
    ],
)
def test_a_lone_surrogate_in_any_field_is_a_400(send, path, field, param):
    body = VALID[path].replace('"model": "inkwell-tiny", ', "" if '"model"' in field else '"model": "inkwell-tiny", ')
    body = body % field

    _refused(send(path, body), param=param, says="contains invalid Unicode (a lone surrogate)")


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (REST, '{"prompt": "Hi \\ud800 there"}', "prompt"),
        (REST, '{"messages": [{"role": "user", "content": "\\ud83d"}]}', "messages[0].content"),
        (COMPLETIONS, '{"model": "inkwell-tiny", "prompt": "\\ud800"}', "prompt"),
        (COMPLETIONS, '{"model": "inkwell-tiny", "prompt": ["\\ud800"]}', "prompt[0]"),
        (CHAT, '{"model": "inkwell-tiny", "messages": [{"role": "user", "content": "\\udfff"}]}',
         "messages[0].content"),
        (CHAT, '{"model": "\\ud800", "messages": [{"role": "user", "content": "Hi"}]}', "model"),
        (REST, '{"prompt": "Hi", "\\ud800": 1}', "'\\ud800'"),
    ],
)  # fmt: skip
def test_a_lone_surrogate_in_the_text_never_reaches_the_tokenizer(send, path, body, param):
    _refused(send(path, body), param=param, says="contains invalid Unicode (a lone surrogate)")


def test_a_surrogate_pair_is_an_ordinary_character(send):
    # "\ud83d\ude00" is how ASCII-only JSON writes an emoji: one character, not two lone halves.
    response = send(REST, b'{"prompt": "Smile \\ud83d\\ude00", "max_new_tokens": 5}')

    assert response.status == 201
    assert GenerationJob.objects.get().prompt == "Smile \N{GRINNING FACE}"


@pytest.mark.parametrize("path", ENDPOINTS)
def test_a_body_that_is_not_utf8_is_a_400(send, path):
    body = (VALID[path] % '"seed": 1').encode()[:-1] + b', "note": "caf\xe9"}'  # Latin-1, not UTF-8

    _refused(send(path, body), param=None, says="not UTF-8")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_a_body_over_the_upload_limit_is_413_in_the_envelope(send, path, settings):
    body = VALID[path] % f'"stop": ["{"x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE}"]'

    response = send(path, body)

    assert response.status == 413
    assert "larger than 2,621,440 bytes" in response.json()["error"]["message"]
    assert not GenerationJob.objects.exists()


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json_numbers(send, path, constant):
    _refused(send(path, VALID[path] % f'"temperature": {constant}'), param=None, says="not valid JSON")


HUGE = "9" * 400


@pytest.mark.parametrize(
    ("field", "rest_param", "says"),
    [
        (f'"max_new_tokens": {HUGE}', "max_new_tokens", "between 1 and 200"),
        ('"max_new_tokens": 1e400', "max_new_tokens", "integer"),
        (f'"seed": {2**80}', "seed", "between 0 and 9223372036854775807"),
        (f'"seed": {HUGE}', "seed", "between 0 and 9223372036854775807"),
        ('"top_k": true', "top_k", "integer"),
        ('"top_k": "5"', "top_k", "integer"),
        ('"temperature": "0.5"', "temperature", "number"),
        ('"temperature": 1e400', "temperature", "number"),
        ('"temperature": false', "temperature", "number"),
        ('"top_p": -0.0', "top_p", "between 0.01 and 1"),
        ('"repetition_penalty": [1]', "repetition_penalty", "number"),
    ],
)
def test_every_number_refuses_edge_values_through_the_rest_api(send, field, rest_param, says):
    body = '{"prompt": "Hi", %s}' % field  # noqa: UP031 - the field is raw JSON

    error = _refused(send(REST, body), param=rest_param, says=says)

    assert rest_param in error["message"]


@pytest.mark.parametrize("path", [COMPLETIONS, CHAT])
@pytest.mark.parametrize(
    ("field", "param", "says"),
    [
        (f'"max_tokens": {HUGE}', "max_tokens", "max_tokens must be between 1 and 200; got an integer of"),
        ('"max_tokens": 1e400', "max_tokens", "max_tokens must be an integer"),
        (f'"seed": {2**80}', "seed", "seed must be between 0 and 9223372036854775807; got"),
        ('"top_k": true', "top_k", "top_k must be an integer between 0 and 1000; got true/false"),
        ('"temperature": "0.5"', "temperature", "temperature must be a number between 0 and 2; got a string"),
        ('"temperature": 1e400', "temperature", "temperature must be between 0 and 2; got inf"),
        ('"top_p": -0.0', "top_p", "top_p must be between 0.01 and 1"),
        ('"stream": "yes"', "stream", "stream must be true or false"),
    ],
)
def test_every_number_refuses_edge_values_through_the_openai_api(send, path, field, param, says):
    body = VALID[path].replace(', "max_tokens": 5', "") % field

    _refused(send(path, body), param=param, says=says)


def test_max_completion_tokens_is_named_as_sent(send):
    body = VALID[CHAT].replace(', "max_tokens": 5', "") % '"max_completion_tokens": 100000'

    _refused(send(CHAT, body), param="max_completion_tokens", says="max_completion_tokens must be")


@pytest.mark.parametrize("temperature", ["1e-45", "5e-324", "0.009", "-0.0", "0"])
def test_a_temperature_below_a_hundredth_is_stored_as_greedy_zero(send, temperature):
    response = send(REST, f'{{"prompt": "Hi", "max_new_tokens": 5, "temperature": {temperature}}}')

    assert response.status == 201
    stored = GenerationJob.objects.get().temperature
    assert stored == 0.0 and math.copysign(1, stored) == 1.0
    assert response.json()["temperature"] == 0.0


def test_a_temperature_of_a_hundredth_is_kept(send):
    response = send(REST, '{"prompt": "Hi", "max_new_tokens": 5, "temperature": 0.01}')

    assert response.status == 201 and GenerationJob.objects.get().temperature == 0.01


def test_the_rest_api_reads_json_only(send):
    response = send(REST, "prompt=Hi&max_new_tokens=5", content_type="application/x-www-form-urlencoded")

    assert response.status == 415
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert not GenerationJob.objects.exists()


def test_the_schema_documents_that_a_tiny_temperature_is_greedy(client):
    schema = client.get("/api/schema/", {"format": "json"}).json()

    temperature = schema["components"]["schemas"]["JobCreateRequest"]["properties"]["temperature"]
    assert "below 0.01 counts as 0" in temperature["description"]


def test_a_tiny_temperature_through_the_openai_api_is_stored_as_zero(web_server, api_key, owner):
    parts = urllib.parse.urlsplit(web_server.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    body = {"model": "inkwell-tiny", "prompt": "Hi", "max_tokens": 5, "temperature": 1e-45, "stream": True}
    connection.request(
        "POST", COMPLETIONS, json.dumps(body),
        {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
    )  # fmt: skip
    response = connection.getresponse()
    connection.close()

    job = GenerationJob.objects.get(user=owner)
    assert response.status == 200
    assert job.temperature == 0.0
    assert QuotaPeriod.objects.get(workspace__personal_of=owner).reserved == job.tokens_reserved


def test_stream_options_that_are_not_an_object_are_refused_before_any_job(send):
    body = '{"model": "inkwell-tiny", "prompt": "Hi", "stream_options": true}'

    _refused(send(COMPLETIONS, body), param="stream_options", says="stream_options")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ('{"model": 5, "prompt": "Hi"}', "model"),
        ('{"prompt": 5}', "prompt"),
        ('{"prompt": true}', "prompt"),
        ('{"prompt": "Hi", "stop": [1]}', "stop.0"),
    ],
)
def test_a_number_where_the_rest_api_wants_text_is_a_400_not_a_lookup(send, body, param):
    # Once "model": 5 became the model "5" and answered 404 "unknown model".
    error = _refused(send(REST, body), param=param, says="string")

    assert error["code"] == "invalid_request"
