"""The Replicate command the controller page shows, run for real (bash + curl) against a local fake of
Replicate's API behind the page's Replicate backend: the prediction it creates is the page's input, polled to
the end, and a saved world of the real size goes through Replicate's files API."""

from __future__ import annotations

import json

import numpy as np
from safetensors.numpy import save_file
from ui_fakes import STEPS, FakeReplicate
from ui_harness import open_page, page_server, require_browser, run_curl

from gamecraft.ui import ReplicateBackend

sync_api = require_browser()  # the shared fixtures (browser) are in conftest.py


def test_the_replicate_command_runs_against_replicates_api(browser, tmp_path):
    fake = FakeReplicate(STEPS)
    try:
        with page_server(ReplicateBackend("me/gamecraft", "tok-123", api=fake.url, poll_s=0.02)) as (address, _):
            page = open_page(browser, address)
            page.keyboard.press("KeyW")
            expected = page.evaluate("window.gamecraft.buildInput()")
            command = page.text_content("#command")
            # the latest version (a pushed model is run by version), then polled: no 'Prefer: wait'
            assert f"{fake.url}/predictions " in command and "$REPLICATE_API_TOKEN" in command
            assert "Prefer" not in command
            result = run_curl(command, tmp_path, {"REPLICATE_API_TOKEN": "tok-123"})
            assert result["id"] == "r1" and result["status"] == "succeeded" and fake.polls == len(STEPS)
            assert fake.created == {"version": "abc123", "input": expected}
            # a state file of the real size (7.7 MB) goes through Replicate's files API, read by its name
            state = tmp_path / "big-world.safetensors"
            meta = {
                "format": "gamecraft-world-state",
                "format_version": 2,
                "seed": 3,
                "chunks_done": 1,
                "actions": ["w 0.4"],
            }
            save_file(
                {"last_latents": np.zeros((1, 16, 9, 88, 152), np.float32)},
                str(state),
                metadata={"gamecraft": json.dumps(meta)},
            )
            page.set_input_files("#file", str(state))
            page.wait_for_function(
                "document.querySelector('#drop-text').textContent === 'saved world: big-world.safetensors'"
            )
            page.keyboard.press("KeyD")
            expected = page.evaluate("window.gamecraft.buildInput()")
            result = run_curl(page.text_content("#command"), tmp_path, {"REPLICATE_API_TOKEN": "tok-123"})
            assert result["status"] == "succeeded"
            assert fake.files[0]["data"] == state.read_bytes() and fake.files[0]["filename"] == state.name
            assert fake.created == {
                "version": "abc123",
                "input": {**expected, "continue_from": f"{fake.url}/files/f1"},
            }
            page.context.close()
    finally:
        fake.api.close()
