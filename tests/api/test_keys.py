from __future__ import annotations

import logging
from datetime import timedelta

import openai
import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.apikeys import api_key_create, looks_valid
from accounts.models import ApiKey
from accounts.workspaces import workspace_personal
from inference.models import GenerationJob
from tests.factories import PASSWORD, ApiKeyFactory, JobFactory

pytestmark = pytest.mark.django_db


def _client(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def test_a_key_has_a_prefix_and_a_checksum_and_only_its_hash_is_stored(owner):
    key, raw = api_key_create(user=owner, workspace=workspace_personal(owner), name="laptop")

    assert raw.startswith("ink_") and looks_valid(raw)
    assert not looks_valid(raw[:-1] + ("A" if raw[-1] != "A" else "B"))
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM accounts_apikey")
        stored = " ".join(str(value) for row in cursor.fetchall() for value in row)
    assert raw not in stored and raw[4:] not in stored
    assert key.prefix in stored


def test_a_malformed_key_is_refused_without_touching_the_database(django_assert_num_queries):
    client = _client("ink_this-is-not-a-real-key")

    with django_assert_num_queries(0):
        response = client.get("/api/v1/jobs")

    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_the_key_is_shown_once_on_the_keys_page(client, owner):
    job = JobFactory(user=owner)
    client.force_login(owner)

    asked = client.post("/account/api/", {"name": "ci", "scope": "write"})
    # allauth asks for the password again, then makes the key from the form as it was sent.
    created = client.post(asked.url, {"password": PASSWORD})
    raw = created.context["created"]["raw"]

    assert raw in created.content.decode()
    assert raw not in client.get("/account/api/").content.decode()
    listing = _client(raw).get("/api/v1/jobs")
    assert listing.status_code == 200
    assert [j["id"] for j in listing.json()["results"]] == [str(job.pk)]  # the key acts for its owner


def test_revoked_and_expired_keys_get_401(client, owner, api_key):
    key = ApiKey.objects.get(user=owner)
    client.force_login(owner)
    client.post(f"/account/api/{key.pk}/revoke/")

    revoked = _client(api_key).get("/api/v1/jobs")

    expired_key, expired_raw = api_key_create(
        user=owner, workspace=workspace_personal(owner), name="old", expires_in_days=1
    )
    ApiKey.objects.filter(pk=expired_key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    expired = _client(expired_raw).get("/api/v1/jobs")

    assert (revoked.status_code, revoked.json()["error"]["code"]) == (401, "revoked_api_key")
    assert (expired.status_code, expired.json()["error"]["code"]) == (401, "expired_api_key")


def test_a_read_only_key_can_read_but_not_create(owner):
    job = JobFactory(user=owner)
    _, raw = api_key_create(user=owner, workspace=workspace_personal(owner), name="dashboards", scope="read")
    client = _client(raw)

    listing = client.get("/api/v1/jobs")
    assert listing.status_code == 200
    assert [j["id"] for j in listing.json()["results"]] == [str(job.pk)]
    refused = client.post("/api/v1/jobs", {"prompt": "Hi"}, format="json")
    assert refused.status_code == 403
    assert "read-only" in refused.json()["error"]["message"]
    assert list(GenerationJob.objects.values_list("pk", flat=True)) == [job.pk]  # nothing was queued


def test_a_key_in_the_query_string_is_refused(api_key):
    response = APIClient().get(f"/api/v1/jobs?api_key={api_key}")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "api_key_in_url"


def test_a_plan_without_api_access_is_refused_with_a_clear_message(api_plan, api_key):
    api_plan.api_access = False
    api_plan.save()

    response = _client(api_key).get("/api/v1/jobs")

    assert response.status_code == 403
    assert "does not include API access" in response.json()["error"]["message"]


def test_the_operator_command_prints_a_working_key(owner, capsys):
    call_command("apikey_create", email=owner.email, name="ops", read_only=True)

    raw = capsys.readouterr().out.strip()
    assert looks_valid(raw)
    assert ApiKey.objects.get(prefix=raw[4:16]).scope == "read"


def test_the_plaintext_key_never_reaches_the_logs(api, api_key, caplog):
    with caplog.at_level(logging.DEBUG):
        api.post("/api/v1/jobs", {"prompt": "Hi", "max_new_tokens": 5}, format="json")
        APIClient().get(f"/api/v1/jobs?key={api_key}")

    assert api_key not in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_read_only_key_cannot_generate_through_the_openai_endpoints(api_plan, web_server, owner):
    # Once a 500 (found in review): the /v1 views are async and skipped DRF's scope check.
    raw = ApiKeyFactory(user=owner, scope="read").raw
    client = openai.OpenAI(base_url=web_server.url + "/v1", api_key=raw, max_retries=0)

    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.completions.create(model="inkwell-tiny", prompt="Hi", max_tokens=5)

    assert "read-only" in refused.value.message
    assert not GenerationJob.objects.exists()
