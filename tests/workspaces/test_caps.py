"""Per-member token caps inside a workspace's pool: what an admin may type as a cap, a cap that
bites mid-period, the pool running out first, and both checked in the same reservation when many
processes submit at once."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest
from rest_framework.test import APIClient

from accounts import teams
from accounts.teams import MAX_TOKEN_CAP, member_cap_parse
from billing.models import MemberQuota, QuotaPeriod
from billing.selectors import entitlements_for
from billing.services.ledger import quota_period_open
from core.errors import ApplicationError, QuotaExceeded
from inference.catalog import prompt_token_ids
from inference.models import GenerationJob
from inference.services import job_submit
from tests.factories import ApiKeyFactory
from tests.support import BASE_DIR, process_env
from tests.workspaces import burst
from tests.workspaces.helpers import finished_job, membership, queued_job, work_in

pytestmark = pytest.mark.django_db


# --- what an admin may type -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "cap"),
    [
        (None, None),
        ("", None),
        (" ", None),
        ("\t\n", None),
        ("0", 0),
        ("12,000", 12_000),
        ("1_000_000", 1_000_000),
        (" 42 ", 42),
        (str(MAX_TOKEN_CAP), MAX_TOKEN_CAP),
    ],
)
def test_a_cap_is_empty_for_none_or_a_whole_number_of_tokens(typed, cap):
    assert member_cap_parse(typed) == cap


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("-1", "whole number"),
        ("1e9", "whole number"),
        ("1.5", "whole number"),
        ("12 000", "whole number"),
        ("lots", "whole number"),
        ("0x10", "whole number"),
        ("NaN", "whole number"),
        ("9" * 40, "at most"),
        (str(MAX_TOKEN_CAP + 1), "at most"),
        # Unicode digits that str.isdigit() accepts and int() does not.
        pytest.param("\u00b2", "whole number", id="superscript-two"),
        pytest.param("\u00b9\u00b2\u00b3", "whole number", id="superscript-one-two-three"),
    ],
)
def test_a_cap_that_is_not_a_whole_number_within_bounds_is_refused_with_a_message(typed, says):
    with pytest.raises(ApplicationError) as refused:
        member_cap_parse(typed)

    assert refused.value.param == "monthly_token_cap"
    assert says in refused.value.message


@pytest.mark.parametrize("typed", ["-1", "1e9", "9" * 40, "ten", pytest.param("\u00b2", id="superscript-two")])
def test_a_bad_cap_typed_on_the_members_page_is_a_message_and_changes_nothing(team, admin, member, typed):
    teams.member_cap_set(membership=membership(member, team), cap=7_000)
    browser = work_in(admin, team)

    response = browser.post(f"/workspace/members/{membership(member, team).pk}/cap/", {"monthly_token_cap": typed},
                            follow=True)  # fmt: skip

    assert response.status_code == 200
    assert "A cap is" in response.content.decode()
    assert membership(member, team).monthly_token_cap == 7_000


# --- a cap and the pool, one submit at a time ----------------------------------------------------------


def _per_job(max_new_tokens: int = 10) -> int:
    return len(prompt_token_ids("inkwell-tiny", prompt="A capped prompt")) + max_new_tokens


def _period(team) -> QuotaPeriod:
    return quota_period_open(workspace=team, entitlements=entitlements_for(team))


def test_the_member_sub_ledger_follows_each_job_from_reservation_to_charge(team, member):
    queued = queued_job(member, team, prompt="A capped prompt")
    mine = MemberQuota.objects.get(quota_period__workspace=team, user=member)
    assert (mine.reserved, mine.used) == (queued.tokens_reserved, 0)

    done = finished_job(member, team, prompt="A capped prompt", text="done")

    mine.refresh_from_db()
    assert (mine.reserved, mine.used) == (queued.tokens_reserved, done.tokens_charged)
    pool = QuotaPeriod.objects.get(workspace=team)
    assert (pool.reserved, pool.used) == (queued.tokens_reserved, done.tokens_charged)


def test_a_cap_set_below_what_a_member_used_refuses_their_next_submit_naming_the_cap(team, admin, member, colleague):
    finished_job(member, team, prompt="A capped prompt", text="spent", completion_tokens=8)
    used = MemberQuota.objects.get(quota_period__workspace=team, user=member).used
    cap = used - 1
    work_in(admin, team).post(f"/workspace/members/{membership(member, team).pk}/cap/", {"monthly_token_cap": cap})
    assert membership(member, team).monthly_token_cap == cap
    pool_before = QuotaPeriod.objects.filter(workspace=team).values("used", "reserved").get()
    jobs_before = GenerationJob.objects.count()

    with pytest.raises(QuotaExceeded) as refused:
        job_submit(member=membership(member, team), prompt="A capped prompt", max_new_tokens=10)

    assert refused.value.code == "member_cap_exceeded"
    assert refused.value.status_code == 402
    assert f"{cap:,}-token cap" in refused.value.message and "0 of your" in refused.value.message
    assert refused.value.extra["limit"] == "member_cap" and refused.value.extra["tokens_remaining"] == 0
    assert GenerationJob.objects.count() == jobs_before
    assert QuotaPeriod.objects.filter(workspace=team).values("used", "reserved").get() == pool_before
    assert MemberQuota.objects.get(quota_period__workspace=team, user=member).reserved == 0
    # The colleague, uncapped, shares the pool and goes on.
    assert job_submit(member=membership(colleague, team), prompt="A capped prompt", max_new_tokens=10).pk


def test_the_api_refuses_a_capped_member_in_the_error_envelope(team, member):
    teams.member_cap_set(membership=membership(member, team), cap=_per_job() - 1)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiKeyFactory(user=member, workspace=team).raw}")

    response = api.post("/api/v1/jobs", {"prompt": "A capped prompt", "max_new_tokens": 10}, format="json")

    assert response.status_code == 402
    error = response.json()["error"]
    assert (error["code"], error["limit"]) == ("member_cap_exceeded", "member_cap")
    assert f"{_per_job() - 1:,}-token cap" in error["message"]
    assert not GenerationJob.objects.filter(user=member).exists()


def test_a_cap_of_zero_stops_a_member_and_lifting_it_lets_them_submit_again(team, admin, member):
    target = f"/workspace/members/{membership(member, team).pk}/cap/"
    browser = work_in(admin, team)

    browser.post(target, {"monthly_token_cap": "0"})
    with pytest.raises(QuotaExceeded) as refused:
        queued_job(member, team, prompt="A capped prompt")
    assert refused.value.code == "member_cap_exceeded"

    browser.post(target, {"monthly_token_cap": ""})
    assert membership(member, team).monthly_token_cap is None
    assert queued_job(member, team, prompt="A capped prompt").status == "queued"


def test_a_cap_exactly_the_size_of_a_job_admits_it_once(team, member):
    teams.member_cap_set(membership=membership(member, team), cap=_per_job())

    queued_job(member, team, prompt="A capped prompt")
    with pytest.raises(QuotaExceeded) as refused:
        queued_job(member, team, prompt="A capped prompt")

    assert refused.value.code == "member_cap_exceeded"
    assert MemberQuota.objects.get(quota_period__workspace=team, user=member).reserved == _per_job()


@pytest.mark.parametrize("capped", [False, True], ids=["uncapped", "capped-with-room"])
def test_an_exhausted_pool_refuses_naming_the_pool_and_keeps_the_member_ledger(team, member, capped):
    if capped:
        teams.member_cap_set(membership=membership(member, team), cap=10 * _per_job())
    queued_job(member, team, prompt="A capped prompt")
    period = _period(team)
    QuotaPeriod.objects.filter(pk=period.pk).update(used=period.allowance - period.reserved - _per_job() + 1)
    mine_before = MemberQuota.objects.filter(quota_period=period, user=member).values("used", "reserved").get()
    pool_before = QuotaPeriod.objects.filter(pk=period.pk).values("used", "reserved").get()

    with pytest.raises(QuotaExceeded) as refused:
        queued_job(member, team, prompt="A capped prompt")

    assert refused.value.code == "insufficient_quota"
    assert "this workspace's pool" in refused.value.message
    assert f"{_per_job() - 1:,} remain" in refused.value.message
    assert refused.value.extra["limit"] == "pool"
    # A member whose cap had room is not left holding a reservation the pool refused.
    assert MemberQuota.objects.filter(quota_period=period, user=member).values("used", "reserved").get() == mine_before
    assert QuotaPeriod.objects.filter(pk=period.pk).values("used", "reserved").get() == pool_before


def test_a_member_removed_after_reading_their_membership_is_refused_under_the_lock(team, admin, member):
    stale = membership(member, team)
    work_in(admin, team).post(f"/workspace/members/{stale.pk}/remove/")

    with pytest.raises(ApplicationError) as refused:
        job_submit(member=stale, prompt="A capped prompt", max_new_tokens=10)

    assert (refused.value.code, refused.value.status_code) == ("not_a_member", 403)
    assert not GenerationJob.objects.filter(user=member, workspace=team).exists()


# --- many processes at once ----------------------------------------------------------------------------


def _burst(team, users, *, processes: int, threads: int, per_thread: int) -> dict[int, Counter]:
    running = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.workspaces.burst",
                str(team.pk),
                str(threads),
                str(per_thread),
                *(str(user.pk) for user in users),
            ],
            cwd=BASE_DIR,
            env=process_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    outcomes: dict[int, Counter] = {user.pk: Counter() for user in users}
    for process in running:
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, err[-3000:]
        for user_id, found in json.loads(out.strip().splitlines()[-1]).items():
            outcomes[int(user_id)].update(found)
    return outcomes


def _room(team, *, pool_jobs: int, per_job: int) -> QuotaPeriod:
    """A period with room for ``pool_jobs`` jobs and not one token more than it takes for one more."""
    period = _period(team)
    QuotaPeriod.objects.filter(pk=period.pk).update(allowance=pool_jobs * per_job + per_job - 1, used=0, reserved=0)
    return period


def _ledger_matches(team, period, accepted: dict, per_job: int) -> None:
    period.refresh_from_db()
    jobs = GenerationJob.objects.filter(workspace=team)
    assert jobs.count() == sum(accepted.values())
    assert period.reserved == sum(jobs.values_list("tokens_reserved", flat=True)) == per_job * sum(accepted.values())
    assert period.used == 0
    for user, count in accepted.items():
        assert jobs.filter(user=user).count() == count, user
        mine = MemberQuota.objects.get(quota_period=period, user=user)
        assert (mine.reserved, mine.used) == (per_job * count, 0), user


@pytest.mark.django_db(transaction=True)
def test_a_members_cap_holds_exactly_while_a_colleague_submits_at_the_same_time(team, member, colleague):
    """Member capped at room for 3 jobs, colleague uncapped; the pool has room for exactly 3 plus
    every one of the colleague's submits. 4 processes x 3 threads x 2 submits from each member: the
    member gets exactly 3 (a fourth would push out one of the colleague's), the colleague all of
    theirs, and the pool ends full to the job."""
    per_job = len(prompt_token_ids("inkwell-tiny", prompt=burst.PROMPT)) + burst.MAX_NEW_TOKENS
    submits = 4 * 3 * 2
    teams.member_cap_set(membership=membership(member, team), cap=3 * per_job + per_job - 1)
    period = _room(team, pool_jobs=3 + submits, per_job=per_job)

    outcomes = _burst(team, [member, colleague], processes=4, threads=3, per_thread=2)

    assert outcomes[member.pk] == {"accepted": 3, "member_cap_exceeded": submits - 3}
    assert outcomes[colleague.pk] == {"accepted": submits}
    _ledger_matches(team, period, {member: 3, colleague: submits}, per_job)


@pytest.mark.django_db(transaction=True)
def test_many_processes_from_two_members_fill_the_pool_exactly_and_never_pass_a_cap(team, member, colleague):
    """Pool room for exactly 8 jobs, the member capped at room for 3, the colleague uncapped; 4
    processes x 3 threads x 3 submits from each: exactly 8 accepted, at most 3 of them the
    member's, and every refusal names the limit that refused it."""
    per_job = len(prompt_token_ids("inkwell-tiny", prompt=burst.PROMPT)) + burst.MAX_NEW_TOKENS
    teams.member_cap_set(membership=membership(member, team), cap=3 * per_job + per_job - 1)
    period = _room(team, pool_jobs=8, per_job=per_job)

    outcomes = _burst(team, [member, colleague], processes=4, threads=3, per_thread=3)

    mine, theirs = outcomes[member.pk], outcomes[colleague.pk]
    assert mine["accepted"] + theirs["accepted"] == 8
    assert mine["accepted"] <= 3
    assert sum(mine.values()) == sum(theirs.values()) == 4 * 3 * 3
    assert set(mine) <= {"accepted", "member_cap_exceeded", "insufficient_quota"}
    assert set(theirs) == {"accepted", "insufficient_quota"}
    _ledger_matches(team, period, {member: mine["accepted"], colleague: theirs["accepted"]}, per_job)
