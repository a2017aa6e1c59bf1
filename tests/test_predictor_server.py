"""The real Predictor behind coglet's HTTP server, on tiny weights (CPU), as the built image runs it."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT

from gamecraft.media.video import read_video_frames, write_mp4
from gamecraft.pipeline.state import load_state
from tools.cog_server import data_uri, request_json, save_data_uri, start_cog_server

SIZE = (32, 48)
IMAGE = REPO_ROOT / "assets" / "start.png"


def save_uri(uri: str, path: Path) -> Path:
    return save_data_uri(uri, path)


@pytest.fixture(scope="module")
def server_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("server-tmp")


@pytest.fixture(scope="module")
def server(server_tmp):
    env = {
        "GAMECRAFT_WEIGHTS": "tiny",
        "GAMECRAFT_TINY_SIZE": f"{SIZE[0]}x{SIZE[1]}",
        "TMPDIR": str(server_tmp),
        "CUDA_VISIBLE_DEVICES": "",
    }
    srv = start_cog_server(REPO_ROOT, "predict.py:Predictor", env, startup_timeout_s=240)
    yield srv
    srv.stop()


class WebhookSink:
    """A local HTTP server that records every webhook POST (JSON bodies, in arrival order)."""

    def __init__(self):
        self.events: list[dict] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                sink.events.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait_for(self, status: str, timeout_s: float = 300) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = [e for e in self.events if e.get("status") == status]
            if done:
                return done[-1]
            time.sleep(0.1)
        raise AssertionError(f"no {status} webhook within {timeout_s}s; got {[e.get('status') for e in self.events]}")

    def close(self):
        self.httpd.shutdown()


def _predict_ok(server, inputs, timeout=300) -> list[str]:
    status, body = server.predict(inputs, timeout=timeout)
    assert status == 200, body
    assert body["status"] == "succeeded", body.get("error")
    assert server.wait_until_ready() == "READY"
    return body["output"]


BASE = {"prompt": "a village", "num_inference_steps": 2}


def test_sync_prediction_returns_chunks_video_and_state(server, tmp_path):
    outputs = _predict_ok(
        server,
        {
            **BASE,
            "image": data_uri(IMAGE, "image/png"),
            "actions": '["w", "left_rot"]',
            "action_speeds": "[0.3, 15]",
            "seed": 4,
            "camera_preview": True,
        },
    )
    assert [o.split(";")[0] for o in outputs] == ["data:video/mp4"] * 3 + [
        "data:application/octet-stream",
        "data:image/png",
    ]
    for uri, frames in zip(outputs[:3], (33, 33, 66), strict=False):
        video, info = read_video_frames(save_uri(uri, tmp_path / "v.mp4"))
        assert video.shape == (frames, *SIZE, 3) and info.codec == "h264" and info.pix_fmt == "yuv420p"
    state = load_state(save_uri(outputs[3], tmp_path / "s.safetensors"))
    assert state.seed == 4 and state.chunks_done == 2


def test_async_prediction_streams_outputs_and_continuation_matches(server, tmp_path):
    sink = WebhookSink()
    try:
        inputs = {
            **BASE,
            "image": data_uri(IMAGE, "image/png"),
            "actions": '["w", "d", "s"]',
            "action_speeds": "[0.3, 0.3, 0.3]",
            "seed": 9,
        }
        status, body = request_json(
            "POST",
            f"{server.url}/predictions",
            {"input": inputs, "webhook": sink.url},
            headers={"Prefer": "respond-async"},
        )
        assert status == 202, body
        final = sink.wait_for("succeeded")
        partial = [len(e.get("output") or []) for e in sink.events if e.get("status") == "processing"]
        assert any(0 < n < len(final["output"]) for n in partial), partial  # outputs arrived progressively
        assert "chunk 1 step 1/2" in final["logs"] and "chunk 3/3 done" in final["logs"]
        metrics = final["metrics"]
        assert metrics["chunks_done"] == 3 and metrics["seed"] == 9 and metrics["go_fast"] is False
        assert metrics["progress"]["phase"] == "done" and metrics["progress"]["world_chunk"] == 3
        assert metrics["progress"]["eta_s"] == 0 and metrics["attention"] == "sdpa"
        uninterrupted = load_state(save_uri(final["output"][-1], tmp_path / "full.safetensors"))
    finally:
        sink.close()
    assert server.wait_until_ready() == "READY"
    first = _predict_ok(server, {**inputs, "actions": '["w"]', "action_speeds": "[0.3]"})
    state_uri = data_uri(save_uri(first[-1], tmp_path / "one.safetensors"), "application/octet-stream")
    rest = _predict_ok(
        server, {**BASE, "continue_from": state_uri, "actions": '["d", "s"]', "action_speeds": "[0.3, 0.3]"}
    )
    resumed = load_state(save_uri(rest[-1], tmp_path / "rest.safetensors"))
    assert resumed.chunks_done == 3 and resumed.seed == 9
    assert torch.equal(resumed.last_latents, uninterrupted.last_latents)


def test_cancel_mid_run_leaves_no_files(server, server_tmp):
    sink = WebhookSink()
    try:
        inputs = {
            **BASE,
            "image": data_uri(IMAGE, "image/png"),
            "actions": json.dumps(["w"] * 12),
            "action_speeds": json.dumps([0.2] * 12),
            "num_inference_steps": 8,
        }
        status, _ = request_json(
            "POST",
            f"{server.url}/predictions",
            {"id": "cancel-me", "input": inputs, "webhook": sink.url},
            headers={"Prefer": "respond-async"},
        )
        assert status == 202
        deadline = time.monotonic() + 120
        while not any("chunk 1 step" in (e.get("logs") or "") for e in sink.events):
            assert time.monotonic() < deadline, "prediction never started"
            time.sleep(0.1)
        status, _ = request_json("POST", f"{server.url}/predictions/cancel-me/cancel")
        assert status == 200
        sink.wait_for("canceled", timeout_s=120)
    finally:
        sink.close()
    assert server.wait_until_ready(30) == "READY"
    leftovers = [p for p in (server_tmp / "gamecraft-outputs").rglob("*") if p.is_file()]
    assert leftovers == []


SCHEMA_VIOLATIONS = [
    ({"preset": "turbo"}, "preset"),
    ({"num_inference_steps": 0}, "num_inference_steps"),
    ({"num_inference_steps": 101}, "num_inference_steps"),
    ({"guidance_scale": 0.5}, "guidance_scale"),
    ({"guidance_scale": "high"}, "guidance_scale"),
    ({"seed": -5}, "seed"),
    ({"seed": 2**31}, "seed"),
    ({"fps": 0}, "fps"),
    ({"fps": 61}, "fps"),
    ({"actions": "w, s"}, "actions"),
    ({"action_speeds": "0.2"}, "action_speeds"),
    ({"return_state": "yes"}, "return_state"),
    ({"prompt": "x" * 2001}, "prompt"),
    ({"camera_preview": 3}, "camera_preview"),
]


@pytest.mark.parametrize("bad,field", SCHEMA_VIOLATIONS, ids=[f for _, f in SCHEMA_VIOLATIONS])
def test_schema_violations_are_422(server, bad, field):
    status, body = server.predict({"image": data_uri(IMAGE, "image/png"), **bad})
    assert status == 422, body
    assert any(field in detail["loc"] for detail in body["detail"]), body


SEMANTIC_ERRORS = [
    ({"actions": '["w", "jump"]', "action_speeds": "[0.2, 1]"}, "actions[1]: unknown action 'jump'; expected one of"),
    ({"actions": '["w"]', "action_speeds": "[0.2, 0.3]"}, "action_speeds: 2 speed(s) for 1 action(s)"),
    ({"actions": '["w+left_rot"]', "action_speeds": "[0.3]"}, "action_speeds[0]: 'w+left_rot' combines 2 actions"),
    ({"video": "IMAGE"}, "give exactly one of image, video or continue_from (got image, video)"),
    ({"continue_from": "IMAGE"}, "give exactly one of image, video or continue_from (got image, continue_from)"),
]


@pytest.mark.parametrize("extra,message", SEMANTIC_ERRORS)
def test_semantic_errors_fail_with_clear_messages(server, extra, message):
    image = data_uri(IMAGE, "image/png")
    inputs = {**BASE, "image": image, **{k: (image if v == "IMAGE" else v) for k, v in extra.items()}}
    status, body = server.predict(inputs)
    assert status == 200 and body["status"] == "failed", body
    assert message in body["error"]
    assert server.wait_until_ready() == "READY"


def test_bad_files_fail_clearly(server, tmp_path):
    short = write_mp4(np.zeros((10, 32, 48, 3), dtype=np.uint8), tmp_path / "short.mp4")
    cases = [
        ({"video": data_uri(short, "video/mp4")}, "video has 10 frames; starting from a video needs at least 33"),
        ({"continue_from": data_uri(IMAGE, "application/octet-stream")}, "state file: not a readable safetensors"),
        ({"image": data_uri(b"not an image", "image/png")}, "image"),
    ]
    for inputs, message in cases:
        status, body = server.predict({**BASE, **inputs})
        assert status == 200 and body["status"] == "failed", body
        assert message in body["error"], body["error"]
        assert server.wait_until_ready() == "READY"


SETUP_FAILURES = [
    (
        "no_weights_no_download",
        {"GAMECRAFT_DOWNLOAD": "0"},
        r"weights directory \S+ is incomplete for variant 'distilled': \d+ missing file\(s\); downloading is disabled",
    ),
    (
        "no_weights_no_network",
        {"HF_HUB_OFFLINE": "1"},
        r"is incomplete for variant 'distilled': \d+ missing file\(s\), and downloading them failed: \w+",
    ),
    ("no_gpu", {"TINY_AS_REAL": "1"}, r"no CUDA GPU found: GameCraft needs an 80 GB GPU"),
    (
        "gpus_not_dividing_heads",
        {"GAMECRAFT_WEIGHTS": "tiny", "GAMECRAFT_GPUS": "3"},
        r"GAMECRAFT_GPUS=3: 3 GPUs cannot split 2 attention heads evenly; use one of \[1, 2\] GPUs",
    ),
    (
        "gpus_not_a_number",
        {"GAMECRAFT_WEIGHTS": "tiny", "GAMECRAFT_GPUS": "two"},
        r"GAMECRAFT_GPUS must be a number, got 'two'",
    ),
]


@pytest.mark.parametrize("name,env,pattern", SETUP_FAILURES, ids=[f[0] for f in SETUP_FAILURES])
def test_setup_failure_is_reported_in_one_line(tmp_path, name, env, pattern):
    from gamecraft.testing.tiny_weights import write_tiny_weights

    weights = tmp_path / "weights"
    if env.pop("TINY_AS_REAL", None):  # a complete (tiny) weights directory, but no GPU to run it on
        write_tiny_weights(weights)
    with pytest.raises(RuntimeError, match=r"SETUP_FAILED") as info:
        start_cog_server(
            REPO_ROOT,
            "predict.py:Predictor",
            {"GAMECRAFT_WEIGHTS": str(weights), "CUDA_VISIBLE_DEVICES": "", "TMPDIR": str(tmp_path), **env},
            startup_timeout_s=120,
        )
    assert re.search(pattern, str(info.value)), str(info.value)[-2000:]


def test_sse_stream_delivers_each_chunk_as_an_output_event(server):
    import urllib.request

    body = json.dumps(
        {
            "input": {
                **BASE,
                "image": data_uri(IMAGE, "image/png"),
                "actions": '["w", "d"]',
                "action_speeds": "[0.3, 0.3]",
                "return_state": False,
            }
        }
    ).encode()
    request = urllib.request.Request(
        f"{server.url}/predictions",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
    )
    events = []
    with urllib.request.urlopen(request, timeout=300) as response:
        assert response.headers.get("Content-Type", "").startswith("text/event-stream")
        name = None
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line.split(":", 1)[1])))
                if name == "completed":
                    break
    names = [n for n, _ in events]
    outputs = [data for n, data in events if n == "output"]
    assert [o["index"] for o in outputs] == [0, 1, 2]
    assert all(o["chunk"].startswith("data:video/mp4") for o in outputs)
    assert names.index("output") < names.index("completed") and events[-1][1]["status"] == "succeeded"
    assert server.wait_until_ready() == "READY"


def test_committed_schema_matches_predict_py():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "cog_schema.py"), "--check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
