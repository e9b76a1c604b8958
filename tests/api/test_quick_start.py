"""The quick start on /account/api/ runs as printed: its Python and curl examples, copied from the
rendered page, against the live server and a real worker."""

from __future__ import annotations

import ast
import builtins
import html
import json
import os
import re
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
from django.conf import settings

from inference.models import GenerationJob

pytestmark = pytest.mark.django_db(transaction=True)


def _snippets(client, user, host: str = "testserver") -> dict[str, str]:
    """The page's code examples as a reader copies them: "python" and "curl"."""
    client.force_login(user)
    page = client.get("/account/api/", HTTP_HOST=host).content.decode()
    blocks = [html.unescape(block) for block in re.findall(r'<pre class="prompt-text">(.*?)</pre>', page, re.S)]
    return {
        "python": next(block for block in blocks if "from openai import" in block),
        "curl": next(block for block in blocks if block.startswith("curl ")),
    }


def _unbound_names(source: str) -> set[str]:
    """Names the code reads that it neither imports nor assigns (nor are builtins)."""
    tree = ast.parse(source)
    bound = set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
    return used - bound


def test_the_name_check_finds_the_missing_import_of_os():
    assert _unbound_names('import openai\nkey = os.environ["K"]\nprint(openai, key)') == {"os"}


def test_the_python_example_compiles_and_imports_every_name_it_uses(client, owner):
    python = _snippets(client, owner)["python"]

    compile(python, "quick-start.py", "exec")
    assert _unbound_names(python) == set()
    assert "os.environ" in python


def _environment(api_key: str) -> dict[str, str]:
    return {**os.environ, "INKWELL_API_KEY": api_key}


def test_the_python_example_runs_against_the_live_server(client, web_server, celery_worker, owner, api_key):
    python = _snippets(client, owner, host=urlsplit(web_server.url).netloc)["python"]

    # Bytes, not text=True: universal newlines would turn a "\r" the untrained model emits into "\n".
    run = subprocess.run([sys.executable, "-c", python], env=_environment(api_key), capture_output=True, timeout=120)

    assert run.returncode == 0, run.stderr.decode(errors="replace")
    job = GenerationJob.objects.get(user=owner)
    assert job.source == "openai" and job.model == next(iter(settings.INFERENCE_MODELS))
    assert job.messages == [{"role": "user", "content": "Write a welcome line."}]
    assert run.stdout.decode("utf-8") == job.output_text + "\n"


def test_the_curl_example_submits_a_job_with_a_fresh_idempotency_key_each_time(
    client, web_server, celery_worker, owner, api_key
):
    curl = _snippets(client, owner, host=urlsplit(web_server.url).netloc)["curl"]

    answers = [
        subprocess.run(["sh", "-c", curl], env=_environment(api_key), capture_output=True, text=True, timeout=60)
        for _ in range(2)
    ]

    assert [answer.returncode for answer in answers] == [0, 0]
    created = [json.loads(answer.stdout) for answer in answers]
    jobs = [GenerationJob.objects.get(pk=answer["id"]) for answer in created]
    assert created[0]["stream_url"] == f"/api/v1/jobs/{jobs[0].pk}/stream"
    assert {job.source for job in jobs} == {"api"} and {job.prompt for job in jobs} == {"Once upon a time"}
    assert [job.model for job in jobs] == [next(iter(settings.INFERENCE_MODELS))] * 2
    assert all(re.fullmatch(r"[0-9a-f]{32}", job.idempotency_key) for job in jobs)
    assert jobs[0].idempotency_key != jobs[1].idempotency_key
