"""The controller page's server (gamecraft/ui/server.py): static files, the Cog pass-through proxy
(JSON and SSE, streamed as it arrives) and the Replicate backend against a local fake of its API."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from conftest import REPO_ROOT
from ui_fakes import STEPS, FakeReplicate, FakeUpstream, reply

from gamecraft.pipeline.actions import action_table
from gamecraft.ui import CogBackend, ReplicateBackend
from gamecraft.ui.__main__ import main as ui_main
from gamecraft.ui.server import STATIC
from tools.cog_server import request_json


def read_sse(url, body, timeout=20):
    """[(event, data, arrival time)] of a streamed POST, plus the response headers."""
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
    )
    events, name = [], None
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        headers = dict(resp.headers)
        for raw in resp:
            line = raw.decode().rstrip("\n")
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line.split(":", 1)[1]), time.monotonic()))
    return events, headers


def test_static_files_and_config(serve):
    url = serve(CogBackend("http://127.0.0.1:9"))
    with urllib.request.urlopen(url + "/", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/html") and b"app.js" in resp.read()
    modules = sorted(p.name for p in STATIC.glob("*.js"))
    assert {"app.js", "actions.js", "path.js", "player.js"} <= set(modules)
    for name in modules:
        with urllib.request.urlopen(f"{url}/{name}", timeout=10) as resp:
            assert resp.headers["Content-Type"].startswith("text/javascript")
            # every module the page imports is served
            for imported in re.findall(r'from "\./([\w.]+)"', resp.read().decode()):
                assert imported in modules, (name, imported)
    with urllib.request.urlopen(f"{url}/examples/index.json", timeout=10) as resp:
        examples = json.loads(resp.read())
    with urllib.request.urlopen(f"{url}/examples/{examples[0]['file']}", timeout=10) as resp:
        assert resp.headers["Content-Type"] == "image/png"
    with urllib.request.urlopen(f"{url}/favicon.svg", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("image/svg+xml")
    assert request_json("GET", url + "/../server.py")[0] == 404
    assert request_json("GET", url + "/%2e%2e/server.py")[0] == 404
    assert request_json("GET", url + "/examples/../../server.py")[0] == 404
    assert request_json("GET", url + "/api/config") == (200, {"backend": "cog", "url": "http://127.0.0.1:9"})
    status, body = request_json("POST", url + "/api/predictions", {"input": {}})
    assert status == 502 and body["detail"] == "cannot reach the Cog server at http://127.0.0.1:9 (Connection refused)"
    status, body = request_json("GET", url + "/api/health")
    assert status == 502 and "cannot reach the Cog server at http://127.0.0.1:9" in body["detail"]


def test_cog_proxy_passes_json_errors_and_streams_sse(serve):
    gate = threading.Event()

    def predictions(handler, body):
        if "text/event-stream" not in handler.headers.get("Accept", ""):
            inputs = json.loads(body)["input"]
            if inputs.get("seed") == -1:
                return reply(handler, 422, {"detail": [{"loc": ["body", "input", "seed"], "msg": "too small"}]})
            if inputs.get("seed") == 409:
                return reply(handler, 409, {"detail": "Already running a prediction"})
            return reply(handler, 200, {"status": "succeeded", "output": ["data:video/mp4;base64,AA"], "echo": inputs})
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for i, part in enumerate(
            [
                b'event: start\ndata: {"id": "p1"}\n\n',
                b'event: output\ndata: {"index": 0}\n\n',
                b'event: completed\ndata: {"status": "succeeded"}\n\n',
            ]
        ):
            if i == 2:
                assert gate.wait(10), "the client never saw the first events"
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            handler.wfile.flush()
        handler.wfile.write(b"0\r\n\r\n")

    upstream = FakeUpstream(
        {
            ("POST", "/predictions"): predictions,
            ("POST", "/predictions/p1/cancel"): lambda h, b: reply(h, 200, {}),
            ("GET", "/health-check"): lambda h, b: reply(h, 200, {"status": "READY"}),
        }
    )
    try:
        url = serve(CogBackend(upstream.url))
        status, body = request_json(
            "POST",
            url + "/api/predictions",
            {"input": {"actions": '["w"]', "seed": 3}},
            headers={"Prefer": "respond-async"},
        )
        assert status == 200 and body["echo"] == {"actions": '["w"]', "seed": 3}
        assert upstream.requests[-1][2].get("Prefer") == "respond-async"
        assert request_json("POST", url + "/api/predictions", {"input": {"seed": -1}})[0] == 422
        assert request_json("POST", url + "/api/predictions", {"input": {"seed": 409}}) == (
            409,
            {"detail": "Already running a prediction"},
        )
        assert request_json("POST", url + "/api/predictions/p1/cancel")[0] == 200
        assert request_json("GET", url + "/api/health") == (200, {"status": "READY"})

        # SSE: the first events must reach the client while upstream still holds the last one back
        req = urllib.request.Request(
            url + "/api/predictions",
            data=b'{"input": {}}',
            method="POST",
            headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
        )
        with urllib.request.urlopen(req, timeout=20) as resp:
            assert resp.headers["Content-Type"] == "text/event-stream"
            seen = []
            for raw in resp:
                seen.append(raw.decode().strip())
                if seen[-1] == 'data: {"index": 0}':
                    gate.set()
        assert gate.is_set() and seen[-2:] == ['data: {"status": "succeeded"}', ""]
    finally:
        upstream.close()


def test_replicate_backend_streams_a_polled_prediction_as_cog_events(serve):
    fake = FakeReplicate(STEPS)
    try:
        url = serve(ReplicateBackend("me/gamecraft", "tok-123", api=fake.url, poll_s=0.02))
        assert request_json("GET", url + "/api/config")[1] == {
            "backend": "replicate",
            "model": "me/gamecraft",
            "version": None,
            "latest_version": "abc123",
            "api": fake.url,
        }
        events, headers = read_sse(url + "/api/predictions", {"input": {"actions": '["w", "d"]', "seed": 5}})
        assert headers["Content-Type"] == "text/event-stream"
        # not the models endpoint (official models only): the latest version, read just before
        assert fake.created == {"version": "abc123", "input": {"actions": '["w", "d"]', "seed": 5}}
        names = [n for n, _, _ in events]
        assert names[0] == "start" and names[-1] == "completed"
        outputs = [d for n, d, _ in events if n == "output"]
        assert outputs == [{"index": i, "chunk": c} for i, c in enumerate(STEPS[-1]["output"])]
        logs = "".join(d["data"] for n, d, _ in events if n == "log")
        assert logs == STEPS[-1]["logs"]  # each line once, in order
        assert names.index("output") < names.index("completed")
        final = events[-1][1]
        assert final["status"] == "succeeded" and final["output"] == STEPS[-1]["output"]
    finally:
        fake.api.close()


def test_replicate_backend_versions_json_errors_and_cancel(serve):
    fake = FakeReplicate(STEPS)
    try:
        url = serve(ReplicateBackend("me/gamecraft:abc123", "tok-123", api=fake.url, poll_s=0.02))
        status, body = request_json("POST", url + "/api/predictions", {"input": {"prompt": "p"}})
        assert status == 200 and body["status"] == "succeeded" and body["output"][0].endswith("chunk001.mp4")
        assert fake.created == {"version": "abc123", "input": {"prompt": "p"}}
        status, body = request_json("POST", url + "/api/predictions", {"input": {"seed": -1}})
        assert status == 422
        assert body["detail"] == [
            {
                "loc": ["body", "input", "seed"],
                "msg": "Must be greater than or equal to 0",
                "type": "greater_than_equal",
            }
        ]
        assert request_json("POST", url + "/api/predictions/r1/cancel")[0] == 200 and fake.canceled
        bad = serve(ReplicateBackend("me/gamecraft", "wrong", api=fake.url))
        assert request_json("POST", bad + "/api/predictions", {"input": {}}) == (401, {"detail": "Invalid token."})
    finally:
        fake.api.close()


def test_replicate_backend_uploads_a_real_size_state_file_through_the_files_api(serve, tmp_path):
    """A state file of the real shape (last_latents [1, 16, 9, 88, 152] float32, 7.7 MB) goes through Replicate's
    files API, the input being its URL; a start image under 1 MB stays a data URI."""
    from safetensors.numpy import save_file

    state = tmp_path / "world.safetensors"
    save_file({"last_latents": np.zeros((1, 16, 9, 88, 152), np.float32)}, str(state), metadata={"gamecraft": "{}"})
    assert state.stat().st_size > 7_000_000
    state_uri = "data:application/octet-stream;base64," + base64.b64encode(state.read_bytes()).decode()
    image_uri = "data:image/png;base64," + base64.b64encode(b"\x89PNG" + bytes(500_000)).decode()
    fake = FakeReplicate(STEPS)
    try:
        url = serve(ReplicateBackend("me/gamecraft", "tok-123", api=fake.url, poll_s=0.02))
        inputs = {"continue_from": state_uri, "actions": '["w"]'}
        status, body = request_json("POST", url + "/api/predictions", {"input": inputs})
        assert status == 200 and body["status"] == "succeeded"
        assert fake.created == {
            "version": "abc123",
            "input": {"continue_from": f"{fake.url}/files/f1", "actions": '["w"]'},
        }
        assert len(fake.files) == 1 and fake.files[0]["data"] == state.read_bytes()
        assert fake.files[0]["filename"] == "continue_from.safetensors"
        status, _ = request_json("POST", url + "/api/predictions", {"input": {"image": image_uri}})
        assert status == 200 and fake.created["input"] == {"image": image_uri} and len(fake.files) == 1
    finally:
        fake.api.close()


def test_replicate_backend_refuses_bad_configuration(capsys, monkeypatch):
    with pytest.raises(ValueError, match="REPLICATE_API_TOKEN"):
        ReplicateBackend("me/gamecraft", "")
    with pytest.raises(ValueError, match="owner/name"):
        ReplicateBackend("gamecraft", "t")
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    assert ui_main(["--replicate", "me/gamecraft", "--port", "0"]) == 2
    assert "REPLICATE_API_TOKEN" in capsys.readouterr().err


def test_command_line_serves_the_page():
    import re
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "gamecraft.ui", "--backend", "http://127.0.0.1:9", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        match = re.search(r"on (http://127\.0\.0\.1:\d+/)", line)
        assert match, line
        with urllib.request.urlopen(match.group(1), timeout=10) as resp:
            assert b"GAME" in resp.read()
        assert request_json("GET", match.group(1) + "api/config")[1]["url"] == "http://127.0.0.1:9"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_replicate_prediction_is_canceled_when_the_page_goes_away(serve):
    fake = FakeReplicate([{"status": "processing", "logs": "chunk 1 step 1/8\n", "output": None}])
    try:
        url = serve(ReplicateBackend("me/gamecraft", "tok-123", api=fake.url, poll_s=0.02))
        req = urllib.request.Request(
            url + "/api/predictions",
            data=b'{"input": {}}',
            method="POST",
            headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.readline().startswith(b"event: start")
        deadline = time.monotonic() + 10
        while not fake.canceled and time.monotonic() < deadline:
            time.sleep(0.02)
        assert fake.canceled
    finally:
        fake.api.close()


def test_action_table_route_and_json_only_posts(serve):
    url = serve(CogBackend("http://127.0.0.1:9"))
    assert request_json("GET", url + "/api/actions") == (200, json.loads(json.dumps(action_table())))
    # a form or text/plain POST (what a foreign page can send without a CORS preflight) is refused
    for path in ("/api/predictions", "/api/predictions/x/cancel", "/api/world-video"):
        req = urllib.request.Request(
            url + path, data=b'{"input": {}}', method="POST", headers={"Content-Type": "text/plain"}
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 415


def test_replicate_backend_health_schema_and_metrics(serve):
    steps = [{**STEPS[0], "metrics": {"seed": 7}}, {**STEPS[1], "metrics": {"seed": 7, "chunks_done": 1}}, STEPS[2]]
    fake = FakeReplicate(steps)
    try:
        url = serve(ReplicateBackend("me/gamecraft", "tok-123", api=fake.url, poll_s=0.02))
        assert request_json("GET", url + "/api/health") == (200, {"status": "READY", "backend": "replicate"})
        assert (
            request_json("GET", url + "/api/schema")[1]["components"]["schemas"]["Input"]["properties"]["seed"][
                "maximum"
            ]
            == 2147483647
        )
        events, _ = read_sse(url + "/api/predictions", {"input": {}})
        metrics = [d for n, d, _ in events if n == "metric"]
        assert metrics == [
            {"name": "seed", "value": 7, "mode": "replace"},
            {"name": "chunks_done", "value": 1, "mode": "replace"},
            {"name": "predict_time", "value": 3.2, "mode": "replace"},
        ]
        bad = serve(ReplicateBackend("me/gamecraft", "wrong", api=fake.url))
        status, body = request_json("GET", bad + "/api/health")
        assert status == 401 and body["detail"].startswith("Replicate answered 401")
    finally:
        fake.api.close()


def test_serve_help_is_complete():
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "serve.py"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert (
        "start the Cog HTTP server locally (as the built image runs it, without Docker), make one demo "
        "prediction" in text
    )
    assert "pipeline smoke run, not GameCraft's output." in text


@pytest.mark.parametrize(
    "bad", ["/tmp/elsewhere", "../escape", "..", "a\x00b", "x" * 65, "", "-lead", "sp ace", 7, None, ["p1"]]
)
def test_prediction_ids_coglet_cannot_take_safely_never_reach_it(serve, bad):
    """coglet makes a directory of the id (an absolute path or '..' escapes, a NUL byte wedges the server):
    the page server answers 422 itself and forwards nothing."""
    upstream = FakeUpstream({("POST", "/predictions"): lambda h, b: reply(h, 200, {"status": "succeeded"})})
    try:
        url = serve(CogBackend(upstream.url))
        status, body = request_json("POST", url + "/api/predictions", {"id": bad, "input": {}})
        assert status == 422 and "prediction id" in body["detail"]
        if isinstance(bad, str) and bad and "/" not in bad and "\x00" not in bad:
            quoted = urllib.request.quote(bad, safe="")
            status, body = request_json("POST", f"{url}/api/predictions/{quoted}/cancel")
            assert status == 422 and "prediction id" in body["detail"]
        assert upstream.requests == []
        for good in ("p1", "pred_18edfc0d3c017063", "A-b_9" + "x" * 59):
            assert request_json("POST", url + "/api/predictions", {"id": good, "input": {}})[0] == 200
        assert len(upstream.requests) == 3
    finally:
        upstream.close()
