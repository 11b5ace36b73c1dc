"""The layering is a check, not a hope: `lint-imports` (run by `make lint`) keeps the contracts in
.importlinter, and a forbidden import makes it fail. Runs on a copy of the packages, so the copy can
be given a bad import without touching the tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("backend", "kernels", "client", "openai_server", "benchmarks")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path, contract: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    only = ["--contract", contract] if contract else []
    return subprocess.run([str(LINT_IMPORTS), "--config", str(root / ".importlinter"), *only], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def tree(tmp_path):
    for name in PACKAGES:
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "results"))
    shutil.copy(REPO / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


@pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is installed by make setup")
@pytest.mark.parametrize(("module", "line", "contract"), [
    ("kernels/_bad.py", "import backend.models\n", "layers"),  # kernels import nothing of ours
    ("backend/models/_bad.py", "from backend.engine import Engine\n", "layers"),  # models below the engine
    ("client/_bad.py", "import benchmarks.metrics\n", "layers"),  # client is a leaf
    ("backend/engine/kv/_bad.py", "import backend.engine.scheduling.scheduler\n", "engine"),  # no cycles inside
    # The OpenAI server talks to Triton like a client: no engine in its process.
    ("openai_server/_bad.py", "from backend.engine import Engine\n", "openai-server"),
])
def test_a_forbidden_import_fails_the_contracts(tree, module, line, contract):
    clean = _lint(tree)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    (tree / module).write_text(line)
    assert _lint(tree).returncode != 0
    broken = _lint(tree, contract)  # the contract that forbids it, and only that one
    assert broken.returncode != 0 and "BROKEN" in broken.stdout, broken.stdout
    other = _lint(tree, {"layers": "engine", "engine": "layers", "openai-server": "layers"}[contract])
    assert other.returncode == 0, other.stdout
