"""The engine's public surface: every name in ``inference.engine.__all__`` resolves, and what a
web process needs of it (tokenizers, the context window) imports without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import inference.engine

ROOT = Path(__file__).resolve().parent.parent.parent

# A process in which torch cannot be found or imported, as on a web host without it.
WITHOUT_TORCH = """
import importlib.abc, importlib.util, sys

_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, package=None: (
    None if name.split(".")[0] == "torch" else _find_spec(name, package)
)


class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NoTorch())

from inference.engine import context_window, load_tokenizer, model_config

tokenizer = load_tokenizer(sys.argv[1])
print(len(tokenizer("Once upon a time").input_ids), context_window(model_config(sys.argv[1]), tokenizer))
assert "torch" not in sys.modules
"""


def test_every_public_name_resolves():
    for name in inference.engine.__all__:
        assert getattr(inference.engine, name) is not None, name
    assert set(dir(inference.engine)) >= set(inference.engine.__all__)


def test_tokenizers_and_the_context_window_need_no_torch(tiny_model_path):
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, str(tiny_model_path)], cwd=ROOT, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr[-3000:]
    tokens, context = result.stdout.split()
    assert int(tokens) > 0
    assert int(context) == 1024
