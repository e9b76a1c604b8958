"""Customers' texts at rest: sealed per workspace, bound to their row and field, rotatable, shredded
with their workspace."""

from __future__ import annotations

import base64
import io
import os
import time

import pytest
from django.core.checks import run_checks
from django.core.exceptions import FieldError, ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import transaction

from accounts.workspaces import workspace_personal
from core import crypto, rotation
from core.fields import sealed_update_many, sealed_values
from core.models import AuditAction, AuditEvent, DataKey
from inference.models import GenerationJob
from saas.flows import account_delete
from tests.factories import JobFactory, UserFactory

pytestmark = pytest.mark.django_db


def _entry(key_id: str) -> str:
    return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"


def _raw(job, *fields):
    return GenerationJob.objects.filter(pk=job.pk).values_list(*fields).get()


def _texts(job) -> tuple:
    job = GenerationJob.objects.get(pk=job.pk)
    return job.prompt, job.messages, job.output_text, job.stop


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("", "is empty"),
        ("k1", "is not id:base64"),
        ("bad id:" + base64.b64encode(bytes(32)).decode(), "is not id:base64"),
        ("k1:not*base64", "not valid base64"),
        ("k1:" + base64.b64encode(bytes(16)).decode(), "16 bytes; AES-256 needs 32"),
        (f"k1:{base64.b64encode(bytes(32)).decode()},k1:{base64.b64encode(bytes(32)).decode()}", "appears twice"),
    ],
)
def test_a_bad_key_ring_is_refused_with_what_to_change(spec, says):
    with pytest.raises(ImproperlyConfigured, match=says):
        crypto.KeyRing(spec)


def test_texts_read_as_written_and_the_columns_hold_only_ciphertext():
    messages = [{"role": "user", "content": "the lighthouse-7f3a log"}]
    job = JobFactory(prompt="the lighthouse-7f3a prompt", messages=messages, stop=["lighthouse-7f3a"], finished=True)
    GenerationJob.objects.filter(pk=job.pk).update(**sealed_values(job, output_text="lighthouse-7f3a out"))

    assert _texts(job) == ("the lighthouse-7f3a prompt", messages, "lighthouse-7f3a out", ["lighthouse-7f3a"])
    for raw in _raw(job, "prompt", "messages", "output_text", "stop"):
        assert raw[:1] == crypto.VERSION and b"lighthouse" not in raw
    assert DataKey.objects.filter(workspace=job.workspace).count() == 1


def test_empty_texts_are_stored_as_null_and_read_back_empty():
    job = JobFactory(prompt="", messages=None, stop=[])
    assert _raw(job, "prompt", "messages", "output_text", "stop") == (None, None, None, None)
    assert _texts(job) == ("", None, "", [])


def test_a_ciphertext_copied_to_another_row_field_or_workspace_does_not_open():
    user = UserFactory()
    one, two = JobFactory(user=user, prompt="first"), JobFactory(user=user, prompt="second")
    stranger = JobFactory(prompt="elsewhere")
    (sealed,) = _raw(one, "prompt")

    GenerationJob.objects.filter(pk=two.pk).update(prompt=sealed)  # same workspace, same key
    GenerationJob.objects.filter(pk=one.pk).update(output_text=sealed)  # same row, other field
    GenerationJob.objects.filter(pk=stranger.pk).update(prompt=sealed)  # another workspace

    for job, field in ((two, "prompt"), (one, "output_text"), (stranger, "prompt")):
        with pytest.raises(crypto.Undecryptable):
            getattr(GenerationJob.objects.get(pk=job.pk), field)
    assert GenerationJob.objects.get(pk=one.pk).prompt == "first"  # the original still opens


def test_a_tampered_ciphertext_does_not_open():
    job = JobFactory(prompt="keep me whole")
    (sealed,) = _raw(job, "prompt")
    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    GenerationJob.objects.filter(pk=job.pk).update(prompt=type(sealed)(bytes(flipped)))
    with pytest.raises(crypto.Undecryptable, match="does not open here"):
        _texts(job)


def test_plaintext_cannot_reach_a_sealed_column_by_update_or_lookup():
    job = JobFactory(prompt="x")
    with pytest.raises(TypeError, match="sealed at rest"), transaction.atomic():
        GenerationJob.objects.filter(pk=job.pk).update(prompt="in clear")
    with pytest.raises(FieldError, match="Unsupported lookup 'icontains'"), transaction.atomic():
        GenerationJob.objects.filter(prompt__icontains="x").count()
    with pytest.raises(TypeError, match="sealed at rest"), transaction.atomic():
        GenerationJob.objects.filter(prompt="x").count()
    with pytest.raises(TypeError, match="sealed at rest"), transaction.atomic():
        GenerationJob.objects.filter(pk=job.pk).update(prompt=b"bytes in clear")
    assert _texts(job)[0] == "x"


def test_rotation_rewraps_every_data_key_and_the_old_master_key_can_go(settings):
    old, new = _entry("old"), _entry("new")
    settings.ENCRYPTION_KEYS = old
    jobs = [JobFactory(prompt=f"text {n}", finished=True) for n in range(3)]
    before = [_texts(job) for job in jobs]
    assert set(DataKey.objects.values_list("master_key_id", flat=True)) == {"old"}

    settings.ENCRYPTION_KEYS = f"{new},{old}"
    call_command("encryption_rotate", stdout=io.StringIO())
    assert set(DataKey.objects.values_list("master_key_id", flat=True)) == {"new"}
    assert AuditEvent.objects.filter(action=AuditAction.ENCRYPTION_KEYS_REWRAPPED).exists()

    settings.ENCRYPTION_KEYS = new  # the old master key removed
    assert [_texts(job) for job in jobs] == before
    assert not [e for e in run_checks(databases=["default"]) if e.id == "inkwell.E001"]

    settings.ENCRYPTION_KEYS = old  # the key that wraps everything removed by mistake
    with pytest.raises(crypto.Undecryptable, match="'new' is not in INKWELL_ENCRYPTION_KEYS"):
        _texts(jobs[0])
    with pytest.raises(CommandError, match="new \\(3 data keys\\)"):
        call_command("encryption_rotate")
    errors = [e for e in run_checks(databases=["default"]) if e.id == "inkwell.E001"]
    assert len(errors) == 1 and "'new' wraps 3 data keys" in errors[0].msg


def _key_ids(job) -> set[int]:
    return {crypto.sealed_key_id(raw) for raw in _raw(job, "prompt", "output_text", "stop") if raw is not None}


def test_reencryption_moves_every_text_to_new_data_keys_and_deletes_the_old(settings):
    settings.ENCRYPTION_KEY_CACHE_SECONDS = 0
    users = [UserFactory(), UserFactory()]
    jobs = [JobFactory(user=users[n % 2], prompt=f"p{n}", stop=[f"s{n}"], finished=True) for n in range(7)]
    before = [_texts(job) for job in jobs]
    old_keys = set(DataKey.objects.values_list("id", flat=True))

    call_command("encryption_rotate", "--reencrypt", "--batch", "3", stdout=io.StringIO())

    new_keys = set(DataKey.objects.values_list("id", flat=True))
    assert len(new_keys) == 2 and not new_keys & old_keys
    for job in jobs:
        assert _key_ids(job) == {DataKey.objects.get(workspace=job.workspace).id}
    assert [_texts(job) for job in jobs] == before
    event = AuditEvent.objects.get(action=AuditAction.ENCRYPTION_REENCRYPTED)
    assert event.detail == {"workspaces": 2, "rows": 7, "keys_deleted": 2}


def test_an_interrupted_reencryption_resumes_without_starting_over(settings):
    settings.ENCRYPTION_KEY_CACHE_SECONDS = 0
    jobs = [JobFactory(user=UserFactory(), prompt=f"p{n}") for n in range(4)]
    rotation.data_keys_retire()
    rotation.rows_reseal(GenerationJob, retired=rotation.retired_key_ids(), batch=2, advance=lambda n: None)
    # ...and the process stopped here, before deleting the retired keys.
    keys_after_first_run = set(DataKey.objects.filter(retired_at__isnull=True).values_list("id", flat=True))

    report = rotation.reencrypt(batch=2)

    assert report["workspaces"] == 0  # nobody got yet another key
    assert set(DataKey.objects.values_list("id", flat=True)) == keys_after_first_run
    assert [_texts(job)[0] for job in jobs] == ["p0", "p1", "p2", "p3"]


def test_a_value_sealed_by_a_stale_process_during_reencryption_is_moved_too(settings):
    """Another process may still seal with a retired key until its cached current key expires:
    a pass that started inside that window runs again."""
    settings.ENCRYPTION_KEY_CACHE_SECONDS = 3600
    job = JobFactory(prompt="p")
    old_key = DataKey.objects.get(workspace=job.workspace).id
    late = JobFactory(user=job.user, prompt="late")
    clock = [time.time()]
    naps = []

    def sleep(seconds):
        # The stale process writes while the command waits out the window.
        naps.append(seconds)
        clock[0] += seconds
        aad = crypto.aad_for("inference.generationjob", late.pk, "prompt")
        sealed = crypto.seal(late.workspace_id, b"late", aad, data_key_id=old_key)
        sealed_update_many(GenerationJob, {late.pk: {"prompt": type(_raw(late, "prompt")[0])(sealed)}})

    rotation.reencrypt(clock=lambda: clock[0], sleep=sleep)
    assert naps and not DataKey.objects.filter(pk=old_key).exists()
    assert _key_ids(late) == {DataKey.objects.get(workspace=job.workspace).id}
    assert _texts(late)[0] == "late"


def test_deleting_the_workspace_shreds_its_texts_wherever_copies_remain(django_capture_on_commit_callbacks):
    user = UserFactory()
    job = JobFactory(user=user, prompt="my secret plan", finished=True)
    workspace_id = workspace_personal(user).pk
    backup = _raw(job, "pk", "prompt", "output_text")  # what a copy of the table holds

    with django_capture_on_commit_callbacks(execute=True):
        account_delete(user=user)

    assert not DataKey.objects.filter(workspace_id=workspace_id).exists()
    for field, sealed in zip(("prompt", "output_text"), backup[1:], strict=True):
        with pytest.raises(crypto.Undecryptable, match="no longer exists"):
            crypto.open_sealed(workspace_id, sealed, crypto.aad_for("inference.generationjob", backup[0], field))


@pytest.mark.django_db(transaction=True)
def test_a_data_key_made_in_a_transaction_that_rolls_back_is_not_remembered():
    """A first job whose transaction fails (an idempotency race, a refused reservation) must not
    leave this process sealing later texts with a key that was never committed."""
    user = UserFactory()
    workspace = workspace_personal(user)
    with pytest.raises(RuntimeError), transaction.atomic():
        crypto.data_key_current_id(workspace.pk)
        raise RuntimeError("the submit failed after the key was made")

    job = JobFactory(user=user, prompt="kept")
    crypto.cache_clear()  # another process, or this one restarted, reads it

    assert _texts(job)[0] == "kept"
    assert DataKey.objects.filter(workspace=workspace).count() == 1
