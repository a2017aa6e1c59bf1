"""The controller page's server: static files, the action table, the whole-world video and a proxy of the
predictions API (one origin for the browser).

Routes:

* ``GET /`` and the files under ``static/`` (the page, its modules, ``examples/``);
* ``GET /api/config`` — which backend; ``GET /api/health`` — the backend's ``/health-check``;
  ``GET /api/actions`` — :func:`gamecraft.pipeline.actions.action_table`; ``GET /api/schema`` — the model's
  OpenAPI schema (input ranges and defaults);
* ``POST /api/predictions`` (JSON, or Server-Sent Events with ``Accept: text/event-stream``) and
  ``POST /api/predictions/<id>/cancel``;
* ``POST /api/world-video`` ``{"chunks": [uri, …], "name": "…mp4"}`` — the chunks joined into one mp4
  (:mod:`gamecraft.ui.world_video`).

POSTs must be ``Content-Type: application/json``: a foreign web page can then only reach them after a
CORS preflight, which this server never grants (it spends a Replicate token with ``--replicate``).

Backends: :class:`CogBackend` (a Cog server URL; requests and responses pass through unchanged, SSE
relayed as it arrives) and :class:`~gamecraft.ui.replicate.ReplicateBackend`.
"""

from __future__ import annotations

import http.client
import json
import mimetypes
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from gamecraft.pipeline.actions import action_table
from gamecraft.ui.replicate import ReplicateBackend, _reason
from gamecraft.ui.upstream import UPSTREAM_TIMEOUT_S, Upstream, iter_response, json_answer, open_url
from gamecraft.ui.world_video import WorldVideoError, join_chunks

STATIC = Path(__file__).parent / "static"
MAX_BODY = 512 * 1024 * 1024
# Prediction ids the page server forwards. coglet 0.23.1 makes ``<tmp>/coglet/predictions/<id>/`` from the
# client's id: an absolute path or ``..`` puts that directory anywhere, and an id it cannot make a directory
# of (a NUL byte, over 255 bytes) leaves its slot busy until the server restarts (docs/serving-notes.md).
PREDICTION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_CANCEL = re.compile(r"^/api/predictions/([^/]+)/cancel$")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


class CogBackend:
    """Pass-through to a Cog server at ``url`` (e.g. ``http://127.0.0.1:5000``)."""

    name = "cog"

    def __init__(self, url: str, timeout_s: float = UPSTREAM_TIMEOUT_S):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def config(self) -> dict:
        return {"backend": self.name, "url": self.url}

    def health(self) -> Upstream:
        return self._call("GET", "/health-check", None, {}, stream=False, timeout=10)

    def schema(self) -> Upstream:
        return self._call("GET", "/openapi.json", None, {}, stream=False, timeout=30)

    def predict(self, body: bytes, headers: dict[str, str]) -> Upstream:
        sse = "text/event-stream" in headers.get("Accept", "")
        return self._call("POST", "/predictions", body, headers, stream=sse)

    def cancel(self, prediction_id: str) -> Upstream:
        return self._call("POST", f"/predictions/{prediction_id}/cancel", b"", {}, stream=False, timeout=30)

    def _call(self, method, path, body, headers, stream, timeout=None) -> Upstream:
        fwd = {k: v for k, v in headers.items() if k in ("Content-Type", "Accept", "Prefer")}
        try:
            resp = open_url(method, self.url + path, body, fwd, timeout or self.timeout_s)
        except OSError as err:
            return json_answer(502, {"detail": f"cannot reach the Cog server at {self.url} ({_reason(err)})"})
        ctype = resp.headers.get("Content-Type", "application/json")
        if stream and resp.status == 200 and ctype.startswith("text/event-stream"):
            return Upstream(200, ctype, stream=iter_response(resp), close=resp.close)
        with resp:
            return Upstream(resp.status, ctype, body=resp.read())


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "gamecraft-ui"
    backend: CogBackend | ReplicateBackend  # set by make_server

    def log_message(self, fmt, *args):  # quiet; errors still reach stderr via send_error paths
        pass

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        routes = {
            "/api/config": lambda: json_answer(200, self.backend.config()),
            "/api/health": self.backend.health,
            "/api/actions": lambda: json_answer(200, action_table()),
            "/api/schema": self.backend.schema,
        }
        if path in routes:
            return self._send(routes[path]())
        name = "index.html" if path in ("/", "") else path.lstrip("/")
        root = STATIC.resolve()
        file = (root / name).resolve()
        if not file.is_relative_to(root) or not file.is_file():
            return self._send(json_answer(404, {"detail": f"not found: {path}"}))
        ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if file.suffix == ".js":
            ctype = "text/javascript"
        if ctype.startswith("text") or ctype == "image/svg+xml" or ctype == "application/json":
            ctype += "; charset=utf-8"
        self._send(Upstream(200, ctype, body=file.read_bytes()))

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self._send(json_answer(413, {"detail": f"request body over {MAX_BODY >> 20} MiB"}))
        body = self.rfile.read(length) if length else b""
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            return self._send(json_answer(415, {"detail": "POST bodies must be sent as application/json"}))
        path = self.path.split("?", 1)[0]
        if path == "/api/predictions":
            if (refusal := _unsafe_id(body)) is not None:
                return self._send(refusal)
            return self._send(self.backend.predict(body, dict(self.headers)))
        if match := _CANCEL.match(path):
            if not PREDICTION_ID.fullmatch(match.group(1)):
                return self._send(json_answer(422, {"detail": ID_RULE}))
            return self._send(self.backend.cancel(match.group(1)))
        if path == "/api/world-video":
            return self._send(_world_video(body))
        self._send(json_answer(404, {"detail": f"not found: {path}"}))

    def _send(self, answer: Upstream) -> None:
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Cache-Control", "no-store")
        for key, value in answer.headers.items():
            self.send_header(key, value)
        if answer.stream is None:
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Accel-Buffering", "no")
        self.end_headers()
        try:
            for piece in answer.stream:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (OSError, http.client.HTTPException):  # the page left (or upstream broke): closing upstream cancels
            self.close_connection = True
        finally:
            if hasattr(answer.stream, "close"):
                answer.stream.close()
            answer.close()


ID_RULE = "a prediction id is 1 to 64 letters, digits, '-' or '_', starting with a letter or digit"


def _unsafe_id(body: bytes) -> Upstream | None:
    """A 422 for a prediction request whose ``id`` the model server must not see (see ``PREDICTION_ID``);
    None for anything else, which the model server judges itself."""
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        return None
    if not isinstance(request, dict) or "id" not in request:
        return None
    if isinstance(request["id"], str) and PREDICTION_ID.fullmatch(request["id"]):
        return None
    return json_answer(422, {"detail": ID_RULE})


def _world_video(body: bytes) -> Upstream:
    try:
        request = json.loads(body or b"{}")
        chunks, name = request.get("chunks"), str(request.get("name") or "gamecraft-world.mp4")
    except (ValueError, AttributeError):
        return json_answer(400, {"detail": 'body must be a JSON object {"chunks": [...], "name": "..."}'})
    try:
        video = join_chunks(chunks)
    except WorldVideoError as err:
        return json_answer(422, {"detail": str(err)})
    name = _SAFE_NAME.sub("-", name)[:120] or "gamecraft-world.mp4"
    return Upstream(
        200,
        "video/mp4",
        body=video.data,
        headers={"Content-Disposition": f'attachment; filename="{name}"', "X-Assembly": video.method},
    )


def make_server(
    backend: CogBackend | ReplicateBackend, host: str = "127.0.0.1", port: int = 8080
) -> ThreadingHTTPServer:
    """A ready (not yet serving) server; call ``serve_forever()``. Port 0 picks a free port."""
    handler = type("BoundHandler", (Handler,), {"backend": backend})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
