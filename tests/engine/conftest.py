"""The engine's tests run without Django, its settings, a database or Redis
(``python -m pytest -p no:django tests/engine``): these fixtures stand in for the suite-wide
ones in tests/conftest.py that need them."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.engine import build_demo_model

# The folder the Django suite builds its test model in (settings.DEMO_MODEL_PATH when testing).
TINY_MODEL_PATH = Path(__file__).resolve().parent.parent.parent / "var" / "models" / "test-tiny"


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    """The test model (the demo builder's untrained 'tiny' size), built once and kept in var/."""
    if not (TINY_MODEL_PATH / "config.json").exists():
        build_demo_model(TINY_MODEL_PATH, size="tiny")
    return TINY_MODEL_PATH


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    """The suite-wide fixture clears rate-limit counters in Redis; the engine has none."""
    yield
