"""Modules stay small (docs/style: at most 400 lines, one concern each): every Python file the project tracks,
the library, the predictor, tools, benchmarks and tests alike."""

from __future__ import annotations

import subprocess

from conftest import REPO_ROOT

LIMIT = 400


def test_every_python_module_is_at_most_400_lines():
    listed = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    files = [REPO_ROOT / name for name in listed.stdout.split()]
    assert len(files) > 100  # the listing worked (a fresh clone is a git checkout)
    long = {f.relative_to(REPO_ROOT).as_posix(): n for f in files if (n := len(f.read_text().splitlines())) > LIMIT}
    assert long == {}, f"split these modules (over {LIMIT} lines): {long}"
