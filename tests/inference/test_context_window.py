"""The web side admits a prompt exactly when the engine would run it: both read a model's context
window by one rule (``inference.engine.context_window``), also for a configuration that keeps it
only in its text part, where they used to disagree (the web said 96 tokens, the engine 1024)."""

from __future__ import annotations

import pytest

from accounts.workspaces import membership_personal
from core.errors import ApplicationError
from inference import catalog
from inference.engine import (
    Engine,
    EngineError,
    GenerationRequest,
    ModelSpec,
    SamplingParams,
    load_model,
    load_tokenizer,
)
from inference.services import job_submit
from tests.engine.tiny_models import save_multimodal_model

pytestmark = pytest.mark.django_db

MODEL = "inkwell-multimodal"
CONTEXT = 96
PROMPT = "Once upon a time"


@pytest.fixture
def multimodal(tmp_path, tiny_model_path, settings, pro_plan):
    path = save_multimodal_model(tmp_path / "model", load_tokenizer(str(tiny_model_path)), max_context=CONTEXT)
    settings.INFERENCE_MODELS = {**settings.INFERENCE_MODELS, MODEL: str(path)}
    catalog.max_context.cache_clear()
    pro_plan.allowed_models = [MODEL]
    pro_plan.save()
    engine = Engine(load_model(ModelSpec(MODEL, str(path), dtype="float32", device="cpu")), max_batch=4).start()
    yield engine
    engine.stop()
    catalog.max_context.cache_clear()


def web_admits(user, max_new_tokens: int) -> bool:
    try:
        job_submit(
            member=membership_personal(user), model=MODEL, prompt=PROMPT, max_new_tokens=max_new_tokens, temperature=0
        )
    except ApplicationError as error:
        assert f"context of {MODEL!r}" in error.message
        return False
    return True


def engine_admits(engine: Engine, max_new_tokens: int) -> bool:
    prompt_ids = catalog.prompt_token_ids(MODEL, prompt=PROMPT)
    request = GenerationRequest(f"r{max_new_tokens}", prompt_ids, SamplingParams(max_new_tokens=max_new_tokens))
    try:
        engine.submit(request)
    except EngineError as error:
        assert "exceeds the model's context" in str(error)
        return False
    request.cancel()
    return True


def test_the_web_admits_a_prompt_exactly_when_the_engine_does(multimodal, subscriber):
    prompt_tokens = len(catalog.prompt_token_ids(MODEL, prompt=PROMPT))
    room = CONTEXT - prompt_tokens

    decisions = {n: (web_admits(subscriber, n), engine_admits(multimodal, n)) for n in (room, room + 1, 500)}

    assert decisions == {room: (True, True), room + 1: (False, False), 500: (False, False)}
