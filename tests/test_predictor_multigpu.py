"""The predictor with several ranks (``GAMECRAFT_GPUS=2``; gloo processes with tiny weights on CPU)
behind the real Cog server: predictions work, and a dead worker rank fails the prediction clearly and
turns the health check UNHEALTHY instead of hanging."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from tools.cog_server import data_uri, start_cog_server

IMAGE = REPO_ROOT / "assets" / "start.png"
INPUTS = {
    "prompt": "a village",
    "num_inference_steps": 2,
    "image": data_uri(IMAGE, "image/png"),
    "actions": '["w", "left_rot"]',
    "action_speeds": "[0.3, 15]",
    "seed": 3,
}


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def spawned_workers(pid: int) -> list[int]:
    workers = []
    for child in descendants(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"multiprocessing.spawn" in cmdline and b"resource_tracker" not in cmdline:
            workers.append(child)
    return workers


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {
        "GAMECRAFT_WEIGHTS": "tiny",
        "GAMECRAFT_TINY_SIZE": "32x48",
        "GAMECRAFT_GPUS": "2",
        "TMPDIR": str(tmp_path_factory.mktemp("multigpu-tmp")),
        "CUDA_VISIBLE_DEVICES": "",
    }
    srv = start_cog_server(REPO_ROOT, "predict.py:Predictor", env, startup_timeout_s=300)
    yield srv
    srv.stop()


def test_two_rank_predictor_serves_and_fails_cleanly_when_a_worker_dies(server):
    assert "1 GPU workers ready" in server.logs(20000)
    status, body = server.predict(INPUTS, timeout=300)
    assert status == 200 and body["status"] == "succeeded", body.get("error")
    assert len(body["output"]) == 4  # 2 chunks, the video, the state file
    assert server.wait_until_ready() == "READY"

    workers = spawned_workers(server.process.pid)
    assert len(workers) == 1, workers
    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while server.health().get("status") != "UNHEALTHY" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server.health().get("status") == "UNHEALTHY"
    started = time.monotonic()
    status, body = server.predict(INPUTS, timeout=60, busy_retry_s=0)
    assert time.monotonic() - started < 30  # answered, not hung
    assert status == 200 and body["status"] == "failed", (status, body)
    assert "WorkerFailure: GPU worker 1 exited with code -9; the model must be restarted" in body["error"]
    assert server.health().get("status") == "UNHEALTHY"
