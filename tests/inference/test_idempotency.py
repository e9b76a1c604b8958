"""job_submit answers a repeated Idempotency-Key itself, for every caller: the same request gets
its job again and nothing more is reserved; the key with another request is refused."""

from __future__ import annotations

import pytest

from accounts.workspaces import membership_personal
from billing.models import QuotaPeriod
from core.errors import ApplicationError
from inference.models import GenerationJob
from inference.services import job_cancel, job_delete, job_submit, request_hash_of

pytestmark = pytest.mark.django_db

REQUEST = {"prompt": "Once upon a time", "max_new_tokens": 20}


def test_a_repeated_key_returns_the_first_job_and_reserves_nothing_more(owner):
    digest = request_hash_of(REQUEST)
    first = job_submit(member=membership_personal(owner), idempotency_key="k-1", request_hash=digest, **REQUEST)

    again = job_submit(member=membership_personal(owner), idempotency_key="k-1", request_hash=digest, **REQUEST)

    assert again.pk == first.pk
    assert (first.replayed, again.replayed) == (False, True)
    assert GenerationJob.objects.filter(user=owner).count() == 1
    assert QuotaPeriod.objects.get(workspace__personal_of=owner).reserved == first.tokens_reserved


def test_a_key_reused_for_another_request_is_refused_and_changes_nothing(owner):
    first = job_submit(
        member=membership_personal(owner), idempotency_key="k-2", request_hash=request_hash_of(REQUEST), **REQUEST
    )
    other = {**REQUEST, "prompt": "Another story"}

    with pytest.raises(ApplicationError) as refused:
        job_submit(
            member=membership_personal(owner), idempotency_key="k-2", request_hash=request_hash_of(other), **other
        )

    assert (refused.value.code, refused.value.status_code) == ("idempotency_key_reused", 422)
    assert list(GenerationJob.objects.filter(user=owner).values_list("pk", flat=True)) == [first.pk]
    assert QuotaPeriod.objects.get(workspace__personal_of=owner).reserved == first.tokens_reserved


def test_the_key_of_a_deleted_job_still_answers_with_that_job(owner):
    digest = request_hash_of(REQUEST)
    first = job_submit(member=membership_personal(owner), idempotency_key="k-3", request_hash=digest, **REQUEST)
    job_delete(job=job_cancel(job=first))

    again = job_submit(member=membership_personal(owner), idempotency_key="k-3", request_hash=digest, **REQUEST)

    assert (again.pk, again.replayed) == (first.pk, True)
    assert GenerationJob.objects.filter(user=owner).count() == 1
