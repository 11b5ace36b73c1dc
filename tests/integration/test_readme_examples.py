"""The README's examples of what the bundled model answers, run as written against the test server
(the server's address appended), and the start-up hint of `make serve` listing the same prompts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLI = ".venv/bin/python -m client generate "


def section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def bash(line: str, **kw) -> subprocess.CompletedProcess:
    # The README's lines are shell (one prompt is $'...' quoted); the test's Python stands in for .venv's.
    return subprocess.run(["bash", "-c", line.replace(".venv/bin/python", sys.executable, 1)], cwd=REPO,
                          capture_output=True, text=True, timeout=60, **kw)


def cli_examples(model: str | None = None) -> list[tuple[str, str]]:
    """The section's `client generate` lines with their answers: `dllm`'s (no --model), or `model`'s."""
    found = re.findall(r"^(\.venv/bin/python -m client generate .+?)\s+# .* -> (\S+)$",
                       section("What the bundled model answers"), re.M)
    return [(line, answer) for line, answer in found
            if (f"--model {model} " in line if model else "--model" not in line)]


def task_examples() -> list[tuple[str, str]]:
    found = cli_examples()
    assert len(found) == 5, found
    return found


def test_one_example_per_task_answers_as_the_readme_says(server):
    for line, answer in task_examples():
        run = bash(f"{line} --url {server.grpc_url}")
        assert run.returncode == 0, run.stderr
        assert run.stdout == answer + "\n", (line, run.stdout)


def test_a_prompt_outside_the_tasks_gets_the_empty_answer_the_readme_shows(server):
    text = section("What the bundled model answers")
    curl = re.search(r"^(curl .+\n.+\}')\n# (\{.+\})$", text, re.M)
    assert curl, "README: the curl example of an empty answer is missing"
    run = bash(curl.group(1).replace("localhost:8000", server.http_url))
    assert run.returncode == 0 and json.loads(run.stdout) == json.loads(curl.group(2)), run.stdout + run.stderr
    cli = re.search(r'^(\.venv/bin/python -m client generate "What is 12\+35\?")\n# .*"(note: .+)"\)$', text, re.M)
    assert cli, "README: the CLI example of an empty answer is missing"
    run = bash(f"{cli.group(1)} --url {server.grpc_url}")
    assert run.returncode == 0 and run.stdout == "\n" and run.stderr.strip() == cli.group(2), run


def test_make_serve_hint_lists_the_readme_prompts():
    hint = (REPO / "scripts" / "serve.sh").read_text()
    hinted = re.findall(r"client generate (.+?)\$url\s+# .* -> (\S+)$", hint, re.M)
    readme = [(line[len(CLI):].strip(), answer) for line, answer in task_examples()]
    assert [(p.replace("\\$", "$"), a) for p, a in hinted] == readme
