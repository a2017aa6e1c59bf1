"""Shared fixtures. The project's shared files (golden vectors, Cog's config schema) live in ../shared beside
the checkout; ``GAMECRAFT_SHARED`` points elsewhere (a clone in a temporary directory), ``GAMECRAFT_GOLDEN`` at
the golden vectors alone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_path() -> Path:
    return Path(os.environ.get("GAMECRAFT_SHARED", REPO_ROOT.parent / "shared")).resolve()


def golden_path() -> Path:
    return Path(os.environ.get("GAMECRAFT_GOLDEN", shared_path() / "golden")).resolve()


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    path = golden_path()
    if not (path / "README.md").is_file():
        pytest.fail(f"golden vectors not found at {path} (set GAMECRAFT_SHARED or GAMECRAFT_GOLDEN)")
    return path


# -- the controller page's browser tests (tests/test_ui_*.py) ------------------------------------------------
# Module-scoped, so each test module gets its own browser and servers; a module may override one (test_ui_browser
# points ``page`` at the real pipeline's server).


@pytest.fixture(scope="module")
def browser():
    from ui_harness import ARGS, CHROMIUM, require_browser

    sync_api = require_browser()
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True, timeout=60_000)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    """Where the browser tests put their screenshots (``GAMECRAFT_UI_ARTIFACTS`` to keep them)."""
    path = Path(os.environ.get("GAMECRAFT_UI_ARTIFACTS") or tmp_path_factory.mktemp("ui-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {path}")
    return path


@pytest.fixture(scope="module")
def contract(tmp_path_factory):
    """coglet serving the contract predictor (tests/ui_contract_predictor.py)."""
    from ui_harness import start_contract_server

    server = start_contract_server(tmp_path_factory.mktemp("contract"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def url(contract):
    """The controller page's server in front of ``contract``."""
    from ui_harness import page_server

    from gamecraft.ui import CogBackend

    with page_server(CogBackend(contract.url)) as (address, _):
        yield address


@pytest.fixture
def page(browser, url):
    from ui_harness import open_page

    page = open_page(browser, url)
    yield page
    page.context.close()
    assert page.errors == [], page.errors


@pytest.fixture
def serve():
    """Start the controller page's server (``ui_harness.page_server``) for a backend: ``serve(backend)`` → its
    base URL; every server started is shut down after the test."""
    from contextlib import ExitStack

    from ui_harness import page_server

    with ExitStack() as started:

        def start(backend):
            address, _ = started.enter_context(page_server(backend))
            return address.rstrip("/")

        yield start
