"""Soak (tiny weights, CPU): 50 sequential predictions and 20 cancellations through the real server.

Bounds, measured on the predictor's worker process after a warm-up of 5 predictions: resident memory grows
by at most ``RSS_BOUND_MB`` and open file descriptors by at most ``FD_BOUND``; no output files pile up.
"""

from __future__ import annotations

import json
import time

import psutil
import pytest
from conftest import REPO_ROOT

from tools.cog_server import data_uri, request_json, start_cog_server

RSS_BOUND_MB = 150
FD_BOUND = 8
IMAGE = data_uri(REPO_ROOT / "assets" / "start.png", "image/png")
INPUTS = {
    "image": IMAGE,
    "prompt": "a village",
    "actions": '["w"]',
    "action_speeds": "[0.2]",
    "num_inference_steps": 1,
    "return_state": False,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("soak")
    srv = start_cog_server(
        REPO_ROOT,
        "predict.py:Predictor",
        {"GAMECRAFT_WEIGHTS": "tiny", "GAMECRAFT_TINY_SIZE": "32x48", "TMPDIR": str(tmp), "CUDA_VISIBLE_DEVICES": ""},
        startup_timeout_s=240,
    )
    yield srv, tmp
    srv.stop()


def _worker(server) -> psutil.Process:
    """The Python worker coglet runs the predictor in (the child with the most memory)."""
    children = psutil.Process(server.process.pid).children(recursive=True)
    return max(children, key=lambda p: p.memory_info().rss)


def _usage(proc: psutil.Process) -> tuple[float, int]:
    return proc.memory_info().rss / 2**20, proc.num_fds()


def _cancel_one(server, index: int) -> None:
    body = {
        "id": f"soak-cancel-{index}",
        "input": {**INPUTS, "actions": json.dumps(["w"] * 20), "action_speeds": json.dumps([0.2] * 20)},
    }
    deadline = time.monotonic() + 30
    while (
        status := request_json("POST", f"{server.url}/predictions", body, headers={"Prefer": "respond-async"})[0]
    ) == 409:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert status == 202
    time.sleep(0.3)
    assert request_json("POST", f"{server.url}/predictions/soak-cancel-{index}/cancel")[0] in (200, 404)
    assert server.wait_until_ready(60) == "READY"


def test_soak_predictions_and_cancellations(server):
    srv, tmp = server
    for _ in range(5):
        assert srv.predict(INPUTS, timeout=120)[1]["status"] == "succeeded"
        srv.wait_until_ready(30)
    worker = _worker(srv)
    rss_start, fds_start = _usage(worker)
    for _ in range(50):
        status, body = srv.predict(INPUTS, timeout=120)
        assert status == 200 and body["status"] == "succeeded", body
        srv.wait_until_ready(30)
    for index in range(20):
        _cancel_one(srv, index)
    for _ in range(2):  # a few more after the cancellations: the slot and the worker are healthy
        assert srv.predict(INPUTS, timeout=120)[1]["status"] == "succeeded"
        srv.wait_until_ready(30)
    rss_end, fds_end = _usage(worker)
    print(f"worker RSS {rss_start:.0f} -> {rss_end:.0f} MiB, open fds {fds_start} -> {fds_end}")
    assert worker.is_running() and _worker(srv).pid == worker.pid
    assert rss_end - rss_start <= RSS_BOUND_MB, (rss_start, rss_end)
    assert fds_end - fds_start <= FD_BOUND, (fds_start, fds_end)
    leftovers = [p for p in (tmp / "gamecraft-outputs").rglob("*") if p.is_file()]
    assert len(leftovers) <= 2, leftovers  # only the last prediction's files (video + chunk) remain
