"""History search over sealed texts: the prompt, the chat turns and the output are searched, in any
case, newest first, only among the member's own jobs; the page count and the API agree."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.workspaces import membership_personal
from inference.models import GenerationJob
from inference.selectors import job_history
from tests.factories import ApiKeyFactory, JobFactory

pytestmark = pytest.mark.django_db(transaction=True)  # PostgreSQL's server-side cursor, as in production


def _job(user, minutes_ago: int, **texts) -> GenerationJob:
    job = JobFactory(user=user, finished=True, **texts)
    GenerationJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(minutes=minutes_ago))
    return job


def test_search_finds_prompts_chats_and_outputs_in_any_case_newest_first(owner, other_user, client):
    in_prompt = _job(owner, 30, prompt="a note about the Quokka")
    in_chat = _job(owner, 20, prompt="", messages=[{"role": "system", "content": "be brief"},
                                                   {"role": "user", "content": "QUOKKA facts?"}])  # fmt: skip
    in_output = _job(owner, 10, prompt="tell me", output_text="the quokka smiles")
    _job(owner, 5, prompt="nothing here", output_text="a wombat", messages=[{"role": "user", "content": "hi"}])
    _job(owner, 1, prompt="", messages=[{"role": "quokka", "content": "role names are not text"}])
    _job(other_user, 1, prompt="another person's quokka")

    found = job_history(membership_personal(owner), query="quOKKa")

    assert [job.pk for job in found[0:10]] == [in_output.pk, in_chat.pk, in_prompt.pk]
    assert len(found) == 3 and found[1].pk == in_chat.pk
    assert len(job_history(membership_personal(owner), query="absent")) == 0

    client.force_login(owner)
    page = client.get("/jobs/", {"q": "quokka"}).content.decode()
    assert str(in_output.pk) in page and "another person" not in page
    key = ApiKeyFactory(user=owner)
    listed = client.get("/api/v1/jobs", {"q": "QUOKKA"}, HTTP_AUTHORIZATION=f"Bearer {key.raw}").json()
    assert listed["count"] == 3 and [job["id"] for job in listed["results"]] == [
        str(in_output.pk), str(in_chat.pk), str(in_prompt.pk)
    ]  # fmt: skip


def test_a_search_with_a_status_filter_and_paging_past_the_end(owner, client):
    wanted = [_job(owner, minutes, prompt=f"quokka {minutes}") for minutes in range(25, 0, -1)]
    _job(owner, 0, prompt="quokka", status="failed")

    client.force_login(owner)
    first = client.get("/jobs/", {"q": "quokka", "status": "succeeded"})
    beyond = client.get("/jobs/", {"q": "quokka", "status": "succeeded", "page": "99"})

    assert first.status_code == beyond.status_code == 200
    assert first.context["page"].paginator.count == 25
    assert [job.pk for job in beyond.context["page"].object_list] == [job.pk for job in reversed(wanted[:5])]
