"""The controller page and the server's state, in headless Chromium: the status badge follows the Cog server's
health (setup, ready, busy, unhealthy, unreachable, the page's own server gone) and a request that kills the
model worker ends with the truth while the world is kept. The model side is tests/ui_contract_predictor.py under
the real coglet (see test_ui_play.py)."""

from __future__ import annotations

import re
import subprocess
import sys

from ui_fakes import FakeUpstream, reply
from ui_harness import (
    confirm_new_world,
    open_page,
    page_server,
    require_browser,
    rows,
    set_prompt,
    start_contract_server,
    wait_done,
)

from gamecraft.ui import CogBackend

sync_api = require_browser()  # the shared fixtures (browser) are in conftest.py


def test_a_dead_worker_is_reported_at_once_and_the_world_is_kept(browser, tmp_path):
    """Issue 30 #5: the request that kills the model worker ends with the truth (the worker died, how to restart,
    the world is kept), read from a fresh /health-check, never "busy"; the badge follows at once; the play
    buttons stay off, saying why, until the server is READY."""
    server = start_contract_server(tmp_path)
    try:
        with page_server(CogBackend(server.url)) as (address, _):
            page = open_page(browser, address)
            page.wait_for_function("document.querySelector('#server-text').textContent.endsWith(': ready')")
            set_prompt(page, "a world")
            page.keyboard.press("KeyW")
            page.click("#generate")
            assert wait_done(page).startswith("done: 1 chunk")
            set_prompt(page, "crash")
            page.keyboard.press("KeyD")
            page.click("#generate")  # a new world, refused by a worker that dies: world 1 stays
            confirm_new_world(page)
            assert wait_done(page).startswith("failed")
            # the message and the badge are there when the request ends (no poll needed)
            text = page.text_content(".field-error[data-for=generate]")
            assert "its model worker died" in text and "busy" not in text, text
            assert "make run" in text and "tools/serve.py" in text and "World 1 (1 chunk) is kept." in text
            assert page.text_content("#server-text") == f"Cog server {server.url.removeprefix('http://')}: unhealthy"
            assert page.text_content("#world").startswith("world 1: 1 chunk")
            assert page.locator("#thumbs .thumb").count() == 1 and page.evaluate("window.gamecraft.state.world.state")
            assert rows(page) == ["w", "d"] and page.locator("#timeline li.locked").count() == 1
            assert page.is_disabled("#keep") and page.is_disabled("#generate")
            assert "Keep playing is off: the Cog server" in page.text_content("#play-why")
            assert "model worker died" in page.get_attribute("#keep", "title")
            page.keyboard.press("Enter")  # playing from the keyboard says the same
            assert "model worker died" in page.text_content(".field-error[data-for=generate]")
            page.context.close()
    finally:
        server.stop()


def test_the_badge_names_the_server_and_follows_its_health(browser):
    health = {"status": "STARTING"}
    upstream = FakeUpstream({("GET", "/health-check"): lambda h, b: reply(h, 200, health)})
    name = upstream.url.removeprefix("http://")
    # the page's server as its own process, so that stopping it closes its connections as a real stop does
    proc = subprocess.Popen(
        [sys.executable, "-m", "gamecraft.ui", "--backend", upstream.url, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        address = re.search(r"on (http://127\.0\.0\.1:\d+/)", proc.stdout.readline()).group(1)
        page = open_page(browser, address)

        def badge(status=None):
            if status:
                health["status"] = status
            return page.evaluate(
                "window.gamecraft.checkHealth().then(() => [document.querySelector('#server-text')"
                ".textContent, document.querySelector('#server-status').className])"
            )

        assert badge() == [f"Cog server {name}: setup", "badge status warn"]
        assert badge("READY") == [f"Cog server {name}: ready", "badge status good"]
        assert badge("BUSY") == [f"Cog server {name}: busy", "badge status warn"]
        assert badge("UNHEALTHY") == [f"Cog server {name}: unhealthy", "badge status bad"]
        assert badge("SETUP_FAILED")[0] == f"Cog server {name}: setup failed"
        upstream.close()
        assert badge() == [f"Cog server {name}: unreachable", "badge status bad"]
        page.keyboard.press("KeyW")
        assert page.is_disabled("#generate")  # nothing can be played: the buttons say why
        assert page.text_content("#play-why") == (
            f"▶ Generate is off: cannot reach the Cog server at {upstream.url} (Connection refused); "
            "start it (`make run` or `tools/serve.py`)."
        )
        proc.terminate()
        proc.wait(timeout=10)
        assert badge()[0] == f"page's server {address.removeprefix('http://').rstrip('/')}: not answering"
        assert page.text_content("#play-why") == (
            f"▶ Generate is off: no answer from the page's server at {address.rstrip('/')}: "
            "is `python -m gamecraft.ui` still running?"
        )
        page.context.close()
    finally:
        proc.kill()
        proc.wait(timeout=10)
        upstream.close()
