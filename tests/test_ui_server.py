"""The controller page's server (gamecraft/ui/server.py): static files, the Cog pass-through proxy
(JSON and SSE, streamed as it arrives) and the Replicate backend against a local fake of its API."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from tools.cog_server import request_json

from gamecraft.ui import CogBackend, ReplicateBackend, make_server
from gamecraft.ui.__main__ import main as ui_main


class FakeUpstream:
    """A tiny HTTP server on 127.0.0.1; ``routes[(method, path)] = fn(handler, body) -> None``."""

    def __init__(self, routes):
        self.requests: list[tuple[str, str, dict, bytes]] = []
        fake = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.requests.append((self.command, self.path, dict(self.headers), body))
                route = routes.get((self.command, self.path))
                if route is None:
                    return reply(self, 404, {"detail": "no route"})
                route(self, body)

            do_GET = do_POST = _any

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def reply(handler, status, payload, headers=None):
    raw = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(raw)))
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.end_headers()
    handler.wfile.write(raw)


@pytest.fixture
def serve():
    started = []

    def start(backend):
        httpd = make_server(backend, "127.0.0.1", 0)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        started.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd in started:
        httpd.shutdown()
        httpd.server_close()


def read_sse(url, body, timeout=20):
    """[(event, data, arrival time)] of a streamed POST, plus the response headers."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
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
    for name in ("app.js", "path.js", "chunks.js", "minimap.js", "api.js"):
        with urllib.request.urlopen(f"{url}/{name}", timeout=10) as resp:
            assert resp.headers["Content-Type"].startswith("text/javascript")
    assert request_json("GET", url + "/../server.py")[0] == 404
    assert request_json("GET", url + "/%2e%2e/server.py")[0] == 404
    assert request_json("GET", url + "/api/config") == (200, {"backend": "cog", "url": "http://127.0.0.1:9"})
    status, body = request_json("POST", url + "/api/predictions", {"input": {}})
    assert status == 502 and "cannot reach the Cog server" in body["detail"]


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
        for i, part in enumerate([b'event: start\ndata: {"id": "p1"}\n\n', b'event: output\ndata: {"index": 0}\n\n',
                                  b'event: completed\ndata: {"status": "succeeded"}\n\n']):
            if i == 2:
                assert gate.wait(10), "the client never saw the first events"
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            handler.wfile.flush()
        handler.wfile.write(b"0\r\n\r\n")

    upstream = FakeUpstream({("POST", "/predictions"): predictions,
                             ("POST", "/predictions/p1/cancel"): lambda h, b: reply(h, 200, {}),
                             ("GET", "/health-check"): lambda h, b: reply(h, 200, {"status": "READY"})})
    try:
        url = serve(CogBackend(upstream.url))
        status, body = request_json("POST", url + "/api/predictions", {"input": {"actions": '["w"]', "seed": 3}},
                                    headers={"Prefer": "respond-async"})
        assert status == 200 and body["echo"] == {"actions": '["w"]', "seed": 3}
        assert upstream.requests[-1][2].get("Prefer") == "respond-async"
        assert request_json("POST", url + "/api/predictions", {"input": {"seed": -1}})[0] == 422
        assert request_json("POST", url + "/api/predictions", {"input": {"seed": 409}}) == (
            409, {"detail": "Already running a prediction"})
        assert request_json("POST", url + "/api/predictions/p1/cancel")[0] == 200
        assert request_json("GET", url + "/api/health") == (200, {"status": "READY"})

        # SSE: the first events must reach the client while upstream still holds the last one back
        req = urllib.request.Request(url + "/api/predictions", data=b'{"input": {}}', method="POST",
                                     headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
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


class FakeReplicate:
    """Replicate's predictions API: create (models or versions endpoint), GET to poll, cancel."""

    def __init__(self, steps):
        self.steps = steps  # successive states the prediction goes through on each GET
        self.polls = 0
        self.created = None
        self.canceled = False
        base = "/v1"

        def create(handler, body):
            payload = json.loads(body)
            if handler.headers.get("Authorization") != "Bearer tok-123":
                return reply(handler, 401, {"detail": "Invalid token."})
            if payload["input"].get("seed") == -1:
                return reply(handler, 422, {"title": "Input validation failed", "status": 422, "detail": "- seed: bad",
                                            "invalid_fields": [{"type": "greater_than_equal", "field": "input.seed",
                                                                "description": "Must be greater than or equal to 0"}]})
            self.created = payload
            reply(handler, 201, {"id": "r1", "status": "starting", "logs": "", "output": None,
                                 "urls": {"get": f"{self.api.url}{base}/predictions/r1",
                                          "cancel": f"{self.api.url}{base}/predictions/r1/cancel"}})

        def get(handler, body):
            state = self.steps[min(self.polls, len(self.steps) - 1)]
            self.polls += 1
            reply(handler, 200, {"id": "r1", **state})

        def cancel(handler, body):
            self.canceled = True
            reply(handler, 200, {"id": "r1", "status": "canceled"})

        self.api = FakeUpstream({("POST", f"{base}/models/me/gamecraft/predictions"): create,
                                 ("POST", f"{base}/predictions"): create,
                                 ("GET", f"{base}/predictions/r1"): get,
                                 ("POST", f"{base}/predictions/r1/cancel"): cancel})
        self.url = self.api.url + base


STEPS = [
    {"status": "processing", "logs": "chunk 1 step 1/2\n", "output": None},
    {"status": "processing", "logs": "chunk 1 step 1/2\nchunk 1/2 done\n", "output": ["https://x/chunk001.mp4"]},
    {"status": "succeeded", "logs": "chunk 1 step 1/2\nchunk 1/2 done\nchunk 2/2 done\n",
     "output": ["https://x/chunk001.mp4", "https://x/chunk002.mp4", "https://x/video.mp4", "https://x/s.safetensors"],
     "metrics": {"predict_time": 3.2}},
]


def test_replicate_backend_streams_a_polled_prediction_as_cog_events(serve):
    fake = FakeReplicate(STEPS)
    try:
        url = serve(ReplicateBackend("me/gamecraft", "tok-123", api=fake.url, poll_s=0.02))
        assert request_json("GET", url + "/api/config")[1] == {"backend": "replicate", "model": "me/gamecraft",
                                                              "version": None}
        events, headers = read_sse(url + "/api/predictions", {"input": {"actions": '["w", "d"]', "seed": 5}})
        assert headers["Content-Type"] == "text/event-stream"
        assert fake.created == {"input": {"actions": '["w", "d"]', "seed": 5}}
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
        assert body["detail"] == [{"loc": ["body", "input", "seed"], "msg": "Must be greater than or equal to 0",
                                   "type": "greater_than_equal"}]
        assert request_json("POST", url + "/api/predictions/r1/cancel")[0] == 200 and fake.canceled
        bad = serve(ReplicateBackend("me/gamecraft", "wrong", api=fake.url))
        assert request_json("POST", bad + "/api/predictions", {"input": {}}) == (401, {"detail": "Invalid token."})
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

    proc = subprocess.Popen([sys.executable, "-m", "gamecraft.ui", "--backend", "http://127.0.0.1:9", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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
        req = urllib.request.Request(url + "/api/predictions", data=b'{"input": {}}', method="POST",
                                     headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.readline().startswith(b"event: start")
        deadline = time.monotonic() + 10
        while not fake.canceled and time.monotonic() < deadline:
            time.sleep(0.02)
        assert fake.canceled
    finally:
        fake.api.close()
