"""The layers of ARCHITECTURE.md as tests: import-linter's contracts hold, and no import hides
inside a function without saying why."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("saas", "staff", "inference", "billing", "accounts", "core")


def _modules():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path


def function_level_imports_without_reason(path: Path, root: Path = ROOT) -> list[str]:
    """Imports inside a function with no comment on their line or the line above: each one
    should say why it is not at module top (an optional heavy dependency, a late lookup)."""
    source = path.read_text()
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for inner in ast.walk(node):
            if not isinstance(inner, ast.Import | ast.ImportFrom):
                continue
            line = lines[inner.lineno - 1]
            above = lines[inner.lineno - 2].strip() if inner.lineno > 1 else ""
            if "#" not in line and not above.startswith("#"):
                found.append(f"{path.relative_to(root)}:{inner.lineno}: {line.strip()}")
    return sorted(set(found))


def test_every_import_inside_a_function_says_why():
    found = [hit for path in _modules() for hit in function_level_imports_without_reason(path)]

    assert not found, "imports inside functions without a reason:\n" + "\n".join(found)


def test_the_check_finds_an_unexplained_import_and_accepts_an_explained_one(tmp_path):
    module = tmp_path / "example.py"
    module.write_text(
        "def quiet():\n    import json\n\n\n"
        "def explained():\n    import torch  # optional: web processes run without it\n\n\n"
        "def above():\n    # looked up late: the task module imports this one\n    from x import y\n"
    )
    hits = [hit.split(": ", 1)[1] for hit in function_level_imports_without_reason(module, tmp_path)]

    assert hits == ["import json"]


def test_import_linter_contracts_hold():
    # lint-imports sits beside this interpreter (requirements-dev.txt installs it)
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stdout[-4000:]
