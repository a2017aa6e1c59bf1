"""Shared fixtures: the golden vectors live in ../shared/golden beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def golden_path() -> Path:
    return Path(os.environ.get("GAMECRAFT_GOLDEN", REPO_ROOT.parent / "shared" / "golden")).resolve()


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    path = golden_path()
    if not (path / "README.md").is_file():
        pytest.fail(f"golden vectors not found at {path} (set GAMECRAFT_GOLDEN)")
    return path
