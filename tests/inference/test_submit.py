"""job_submit refuses bad input with a clear error, writes nothing and spends nothing."""

from __future__ import annotations

import math

import pytest

from accounts.models import Membership, Workspace, WorkspaceRole
from accounts.workspaces import membership_personal, workspace_personal
from billing.models import MemberQuota, QuotaPeriod
from core.errors import ApplicationError, QuotaExceeded, RateLimited
from inference.models import GenerationJob, JobStatus
from inference.services import job_cancel, job_submit
from tests.factories import SubscriptionFactory

pytestmark = pytest.mark.django_db


def _nothing_spent(user) -> bool:
    no_jobs = not GenerationJob.objects.filter(user=user).exists()
    periods = QuotaPeriod.objects.filter(workspace__personal_of=user)
    return no_jobs and all(p.reserved == 0 and p.used == 0 for p in periods)


def test_a_valid_prompt_is_queued_with_its_tokens_reserved(owner):
    job = job_submit(member=membership_personal(owner), prompt="The lighthouse keeper", max_new_tokens=50)

    assert job.status == JobStatus.QUEUED
    assert job.model == "inkwell-tiny"
    assert job.queue == "gen.low"
    assert job.prompt_tokens > 0
    assert job.tokens_reserved == job.prompt_tokens + 50
    period = QuotaPeriod.objects.get(workspace__personal_of=owner)
    assert (period.allowance, period.reserved, period.used) == (5_000, job.tokens_reserved, 0)


def test_chat_messages_are_counted_through_the_chat_template(owner):
    job = job_submit(
        member=membership_personal(owner), messages=[{"role": "user", "content": "Hello there"}], max_new_tokens=10
    )

    # "### user\nHello there\n\n### assistant\n" is longer than the message alone.
    assert job.prompt_tokens > 3
    assert job.messages == [{"role": "user", "content": "Hello there"}]


@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        ({"prompt": "   "}, "prompt", "The prompt is empty"),
        ({"prompt": "word " * 300}, "prompt", "your plan allows 100 per job"),
        ({"prompt": "Hi", "max_new_tokens": 201}, "max_new_tokens", "between 1 and 200"),
        ({"prompt": "Hi", "max_new_tokens": 0}, "max_new_tokens", "between 1 and 200"),
        ({"prompt": "Hi", "temperature": 2.5}, "temperature", "between 0 and 2"),
        ({"prompt": "Hi", "temperature": float("nan")}, "temperature", "between 0 and 2"),
        ({"prompt": "Hi", "top_p": 0}, "top_p", "between 0.01 and 1"),
        ({"prompt": "Hi", "top_k": -1}, "top_k", "between 0 and 1000"),
        ({"prompt": "Hi", "top_k": 1.5}, "top_k", "must be an integer"),
        ({"prompt": "Hi", "repetition_penalty": 3}, "repetition_penalty", "between 0.5 and 2"),
        ({"prompt": "Hi", "seed": -1}, "seed", "between 0 and"),
        ({"prompt": "Hi", "stop": ["a", "b", "c", "d", "e"]}, "stop", "At most 4 stop sequences"),
        ({"prompt": "Hi", "stop": [1]}, "stop", "a string or a list of strings"),
        ({"prompt": "Hi", "model": "gpt-9"}, "model", "Unknown model 'gpt-9'"),
        ({"prompt": "Hi", "messages": [{"role": "user", "content": "x"}]}, "prompt", "not both"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "must be one of"),
        ({"messages": []}, "messages", "non-empty list"),
        ({"prompt": "Hi", "max_new_tokens": 10**400}, "max_new_tokens", "got an integer of 1329 bits"),
        ({"prompt": "Hi", "seed": 2**80}, "seed", "between 0 and 9223372036854775807; got an integer of 81 bits"),
        ({"prompt": "Hi", "top_k": True}, "top_k", "must be an integer between 0 and 1000; got true/false"),
        ({"prompt": "Hi", "temperature": "0.5"}, "temperature", "must be a number between 0 and 2; got a string"),
        ({"prompt": "Hi", "temperature": float("-inf")}, "temperature", "between 0 and 2; got -inf"),
        ({"prompt": "Hi", "top_p": -0.0}, "top_p", "between 0.01 and 1"),
        ({"prompt": "Hi", "repetition_penalty": None}, "repetition_penalty", "a number between 0.5 and 2; got null"),
        ({"prompt": "Hi", "model": ["inkwell-tiny"]}, "model", "model must be a string"),
        ({"prompt": "Hi", "model": {"name": "inkwell-tiny"}}, "model", "model must be a string"),
        ({"prompt": "Hi", "model": 5}, "model", "model must be a string"),
        ({"prompt": "Hi", "model": "inkwell-\ud800"}, "model", "contains invalid Unicode (a lone surrogate)"),
        ({"prompt": "Hi \ud800 there"}, "prompt", "contains invalid Unicode (a lone surrogate)"),
        ({"messages": [{"role": "user", "content": "\udfff"}]}, "messages[0].content", "a lone surrogate"),
        ({"prompt": "Hi", "stop": ["ok", "\udc00"]}, "stop", "contains invalid Unicode (a lone surrogate)"),
        ({"messages": [{"role": "user", "content": "x" * 200_001}]}, "messages", "longer than 200,000 characters"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_with_a_clear_error_and_spends_nothing(owner, fields, param, message):
    with pytest.raises(ApplicationError) as error:
        job_submit(member=membership_personal(owner), **fields)

    assert error.value.param == param
    assert message in error.value.message
    assert _nothing_spent(owner)


@pytest.mark.parametrize("temperature", [1e-45, 5e-324, 0.0099, -0.0, 0])
def test_a_temperature_below_a_hundredth_means_greedy_and_is_stored_as_zero(owner, temperature):
    job = job_submit(member=membership_personal(owner), prompt="Hi", max_new_tokens=5, temperature=temperature)

    job.refresh_from_db()
    assert job.temperature == 0.0 and math.copysign(1, job.temperature) == 1.0


def test_a_temperature_of_a_hundredth_is_kept(owner):
    job = job_submit(member=membership_personal(owner), prompt="Hi", max_new_tokens=5, temperature=0.01)

    job.refresh_from_db()
    assert job.temperature == 0.01


def test_a_model_outside_the_plan_is_refused(owner, free_plan, settings):
    settings.INFERENCE_MODELS = {**settings.INFERENCE_MODELS, "big": settings.INFERENCE_MODELS["inkwell-tiny"]}

    with pytest.raises(ApplicationError) as error:
        job_submit(member=membership_personal(owner), prompt="Hi", model="big")

    assert error.value.code == "model_not_allowed"
    assert "Your plan (Free) does not include the model 'big'" in error.value.message
    assert _nothing_spent(owner)


def test_prompt_plus_max_new_tokens_over_the_model_context_is_refused(subscriber, pro_plan):
    pro_plan.max_prompt_tokens = 2000
    pro_plan.save()

    with pytest.raises(ApplicationError) as error:
        job_submit(member=membership_personal(subscriber), prompt="word " * 400, max_new_tokens=1000)

    assert error.value.param == "max_new_tokens"
    assert "1,024-token context" in error.value.message
    assert _nothing_spent(subscriber)


def test_no_quota_left_says_how_much_remains_and_when_it_resets(owner):
    first = job_submit(member=membership_personal(owner), prompt="Hi", max_new_tokens=200)
    QuotaPeriod.objects.filter(workspace__personal_of=owner).update(used=5_000 - first.tokens_reserved - 50)

    with pytest.raises(QuotaExceeded) as error:
        job_submit(member=membership_personal(owner), prompt="Hi", max_new_tokens=200)

    assert error.value.status_code == 402
    assert error.value.code == "insufficient_quota"
    assert "Not enough tokens left in this workspace's pool" in error.value.message
    assert "50 remain until the reset on" in error.value.message
    assert GenerationJob.objects.filter(user=owner).count() == 1
    assert QuotaPeriod.objects.get(workspace__personal_of=owner).reserved == first.tokens_reserved


def test_over_the_concurrency_limit_is_refused(owner):
    job_submit(member=membership_personal(owner), prompt="one", max_new_tokens=10)
    job_submit(member=membership_personal(owner), prompt="two", max_new_tokens=10)

    with pytest.raises(RateLimited) as error:
        job_submit(member=membership_personal(owner), prompt="three", max_new_tokens=10)

    assert error.value.code == "concurrency_limit_exceeded"
    assert "This workspace has 2 jobs queued or running; its plan allows 2 at once" in error.value.message
    assert GenerationJob.objects.filter(user=owner).count() == 2


def test_over_the_requests_per_minute_is_refused(owner, free_plan):
    free_plan.max_concurrent_jobs = 100
    free_plan.requests_per_minute = 3
    free_plan.save()
    for _ in range(3):
        job_submit(member=membership_personal(owner), prompt="Hi", max_new_tokens=5)

    with pytest.raises(RateLimited) as error:
        job_submit(member=membership_personal(owner), prompt="Hi", max_new_tokens=5)

    assert error.value.status_code == 429
    assert error.value.code == "rate_limit_exceeded"
    assert GenerationJob.objects.filter(user=owner).count() == 3


def test_the_requests_per_minute_are_the_workspaces_shared_by_its_members(owner, other_user, free_plan):
    free_plan.max_concurrent_jobs = 100
    free_plan.requests_per_minute = 3
    free_plan.save()
    team = Workspace.objects.create(name="Team", slug="team")
    SubscriptionFactory(workspace=team, plan=free_plan)  # a team's pool comes with a subscription
    boss = Membership.objects.create(workspace=team, user=owner, role=WorkspaceRole.OWNER)
    member = Membership.objects.create(workspace=team, user=other_user, role=WorkspaceRole.MEMBER)
    for _ in range(3):
        job_submit(member=boss, prompt="Hi", max_new_tokens=5)

    with pytest.raises(RateLimited) as error:
        job_submit(member=member, prompt="Hi", max_new_tokens=5)
    elsewhere = job_submit(member=membership_personal(other_user), prompt="Hi", max_new_tokens=5)

    assert error.value.code == "rate_limit_exceeded"
    assert not GenerationJob.objects.filter(workspace=team, user=other_user).exists()
    assert elsewhere.workspace == workspace_personal(other_user)  # another workspace has its own minute


def test_cancelling_a_queued_job_releases_its_reservation_at_once(owner):
    job = job_submit(member=membership_personal(owner), prompt="Hi", max_new_tokens=100)

    job = job_cancel(job=job)
    again = job_cancel(job=job)

    assert job.status == again.status == JobStatus.CANCELLED
    assert job.finish_reason == "cancelled"
    period = QuotaPeriod.objects.get(workspace__personal_of=owner)
    assert (period.reserved, period.used) == (0, 0)
    # The member's own line under the pool is released too, so a cap is not eaten by a cancel.
    assert MemberQuota.objects.filter(quota_period=period, user=owner).values_list("reserved", "used").get() == (0, 0)
    assert job.usage.tokens_charged == 0
