"""The controller page's server: static files plus a proxy of the predictions API (one origin).

Routes: ``GET /`` and the files in ``static/``; ``GET /api/config``; ``GET /api/health``;
``POST /api/predictions`` (JSON, or Server-Sent Events with ``Accept: text/event-stream``);
``POST /api/predictions/<id>/cancel``. Two backends:

* :class:`CogBackend` — a Cog server (coglet) URL: requests and responses pass through unchanged;
  SSE is relayed chunk by chunk as it arrives.
* :class:`ReplicateBackend` — a Replicate model: creates the prediction with Replicate's HTTP API,
  polls it, and presents it to the page in coglet's SSE format (``start``, ``log``, ``output``,
  ``completed``), so the page has one code path.

Standard library only (``http.server`` + ``urllib``); no Cog import.
"""

from __future__ import annotations

import http.client
import json
import mimetypes
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

STATIC = Path(__file__).parent / "static"
UPSTREAM_TIMEOUT_S = 3600.0  # a prediction may take up to Replicate's 30 min; SSE lines flow meanwhile
MAX_BODY = 512 * 1024 * 1024
_CANCEL = re.compile(r"^/api/predictions/([A-Za-z0-9_.-]+)/cancel$")


@dataclass
class Upstream:
    """An upstream answer: status, headers to relay and either a body or a byte stream."""

    status: int
    content_type: str
    body: bytes = b""
    stream: Iterator[bytes] | None = None
    close: Callable[[], None] = lambda: None


def _open(method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: float):
    """urllib request that returns the response object for any status (4xx/5xx included)."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as err:
        return err


def _iter_response(resp) -> Iterator[bytes]:
    while True:
        piece = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
        if not piece:
            return
        yield piece


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

    def predict(self, body: bytes, headers: dict[str, str]) -> Upstream:
        sse = "text/event-stream" in headers.get("Accept", "")
        return self._call("POST", "/predictions", body, headers, stream=sse)

    def cancel(self, prediction_id: str) -> Upstream:
        return self._call("POST", f"/predictions/{prediction_id}/cancel", b"", {}, stream=False, timeout=30)

    def _call(self, method, path, body, headers, stream, timeout=None) -> Upstream:
        fwd = {k: v for k, v in headers.items() if k in ("Content-Type", "Accept", "Prefer")}
        try:
            resp = _open(method, self.url + path, body, fwd, timeout or self.timeout_s)
        except OSError as err:
            return _json_answer(502, {"detail": f"cannot reach the Cog server at {self.url}: {err}"})
        ctype = resp.headers.get("Content-Type", "application/json")
        if stream and resp.status == 200 and ctype.startswith("text/event-stream"):
            return Upstream(200, ctype, stream=_iter_response(resp), close=resp.close)
        with resp:
            return Upstream(resp.status, ctype, body=resp.read())


def _json_answer(status: int, payload: Any) -> Upstream:
    return Upstream(status, "application/json", body=json.dumps(payload).encode())


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class ReplicateBackend:
    """A model on Replicate: ``owner/name`` (latest version, models endpoint) or ``owner/name:version``."""

    name = "replicate"

    def __init__(self, model: str, token: str, api: str = "https://api.replicate.com/v1",
                 poll_s: float = 1.0, timeout_s: float = UPSTREAM_TIMEOUT_S):
        if not re.fullmatch(r"[\w.-]+/[\w.-]+(:[0-9a-f]+)?", model):
            raise ValueError(f"--replicate {model!r}: expected owner/name or owner/name:version")
        if not token:
            raise ValueError("the Replicate backend needs an API token: set REPLICATE_API_TOKEN")
        self.model, _, self.version = model.partition(":")
        self.token, self.api, self.poll_s, self.timeout_s = token, api.rstrip("/"), poll_s, timeout_s

    def config(self) -> dict:
        return {"backend": self.name, "model": self.model, "version": self.version or None}

    def _request(self, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        with _open(method, path if path.startswith("http") else self.api + path, body, headers, 60) as resp:
            raw = resp.read()
            try:
                return resp.status, json.loads(raw)
            except ValueError:
                return resp.status, {"detail": raw.decode("utf-8", "replace")}

    def health(self) -> Upstream:
        return _json_answer(200, {"status": "READY", "backend": "replicate"})

    def cancel(self, prediction_id: str) -> Upstream:
        status, body = self._request("POST", f"/predictions/{prediction_id}/cancel")
        return _json_answer(status, body)

    def predict(self, body: bytes, headers: dict[str, str]) -> Upstream:
        try:
            inputs = json.loads(body or b"{}").get("input", {})
        except (ValueError, AttributeError):
            return _json_answer(400, {"detail": "body must be a JSON object with an 'input' object"})
        if self.version:
            status, created = self._request("POST", "/predictions", {"version": self.version, "input": inputs})
        else:
            status, created = self._request("POST", f"/models/{self.model}/predictions", {"input": inputs})
        if status not in (200, 201):
            return _json_answer(*_cog_style_error(status, created))
        if "text/event-stream" in headers.get("Accept", ""):
            return Upstream(200, "text/event-stream", stream=self._events(created))
        final = created
        for final in self._poll(created):
            pass
        return _json_answer(200, final)

    def _poll(self, prediction: dict) -> Iterator[dict]:
        """Yield the prediction after every poll until it is finished (or the timeout)."""
        deadline = time.monotonic() + self.timeout_s
        url = (prediction.get("urls") or {}).get("get") or f"/predictions/{prediction['id']}"
        while True:
            yield prediction
            if prediction.get("status") in ("succeeded", "failed", "canceled") or time.monotonic() > deadline:
                return
            time.sleep(self.poll_s)
            status, fresh = self._request("GET", url)
            if status == 200:
                prediction = fresh

    def _events(self, created: dict) -> Iterator[bytes]:
        yield _sse("start", {"id": created.get("id"), "status": created.get("status")})
        logs_sent, outputs_sent, last = 0, 0, created
        try:
            for last in self._poll(created):
                logs = last.get("logs") or ""
                if len(logs) > logs_sent:
                    for line in logs[logs_sent:].splitlines(keepends=True):
                        yield _sse("log", {"data": line, "source": "stderr"})
                    logs_sent = len(logs)
                output = last.get("output")
                output = output if isinstance(output, list) else ([] if output is None else [output])
                for index in range(outputs_sent, len(output)):
                    yield _sse("output", {"index": index, "chunk": output[index]})
                outputs_sent = len(output)
                yield b": ping\n\n"  # an SSE comment: notices a page that went away
        except GeneratorExit:  # the page went away: stop paying for it
            if last.get("status") not in ("succeeded", "failed", "canceled"):
                self.cancel(str(last.get("id")))
            raise
        yield _sse("completed", {k: last.get(k) for k in ("id", "status", "output", "error", "logs", "metrics")})


def _cog_style_error(status: int, body: Any) -> tuple[int, Any]:
    """Replicate's input-validation answers, reshaped as coglet's 422 so the page shows them per field."""
    if status == 422 and isinstance(body, dict) and isinstance(body.get("invalid_fields"), list):
        detail = [{"loc": ["body", *str(f.get("field", "input")).split(".")], "msg": f.get("description", ""),
                   "type": f.get("type", "value_error")} for f in body["invalid_fields"]]
        return 422, {"detail": detail}
    return status, body


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "gamecraft-ui"
    backend: CogBackend | ReplicateBackend  # set by make_server

    def log_message(self, fmt, *args):  # quiet; errors still reach stderr via send_error paths
        pass

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/api/config":
            return self._send(_json_answer(200, self.backend.config()))
        if path == "/api/health":
            return self._send(self.backend.health())
        name = "index.html" if path in ("/", "") else path.lstrip("/")
        file = (STATIC / name).resolve()
        if file.parent != STATIC.resolve() or not file.is_file():
            return self._send(_json_answer(404, {"detail": f"not found: {path}"}))
        ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if file.suffix == ".js":
            ctype = "text/javascript"
        self._send(Upstream(200, f"{ctype}; charset=utf-8" if ctype.startswith("text") else ctype, body=file.read_bytes()))

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self._send(_json_answer(413, {"detail": f"request body over {MAX_BODY >> 20} MiB"}))
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        if path == "/api/predictions":
            return self._send(self.backend.predict(body, dict(self.headers)))
        if match := _CANCEL.match(path):
            return self._send(self.backend.cancel(match.group(1)))
        self._send(_json_answer(404, {"detail": f"not found: {path}"}))

    def _send(self, answer: Upstream) -> None:
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Cache-Control", "no-store")
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
        except (OSError, http.client.HTTPException):  # the page left (or upstream broke): closing upstream cancels a Cog prediction
            self.close_connection = True
        finally:
            if hasattr(answer.stream, "close"):
                answer.stream.close()
            answer.close()


def make_server(backend: CogBackend | ReplicateBackend, host: str = "127.0.0.1", port: int = 8080) -> ThreadingHTTPServer:
    """A ready (not yet serving) server; call ``serve_forever()``. Port 0 picks a free port."""
    handler = type("BoundHandler", (Handler,), {"backend": backend})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
