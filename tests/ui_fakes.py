"""Fakes for the controller page's tests: a tiny HTTP upstream with scripted routes, and Replicate's
predictions API (create, poll, cancel) on top of it."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


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


class FakeReplicate:
    """Replicate's predictions API: create (models or versions endpoint), GET to poll, cancel; the model (its
    latest version) and the files API (``POST /v1/files``, multipart with a ``content`` part, as Replicate's
    clients send it)."""

    def __init__(self, steps):
        self.steps = steps  # successive states the prediction goes through on each GET
        self.polls = 0
        self.created = None
        self.canceled = False
        self.files: list[dict] = []  # uploads: {"filename", "content_type", "data"}
        base = "/v1"

        def upload(handler, body):
            if handler.headers.get("Authorization") != "Bearer tok-123":
                return reply(handler, 401, {"detail": "Invalid token."})
            parts = _multipart(handler.headers.get("Content-Type", ""), body)
            if "content" not in parts:
                return reply(handler, 400, {"detail": "missing the 'content' part"})
            self.files.append(parts["content"])
            n = len(self.files)
            reply(handler, 201, {"id": f"f{n}", "urls": {"get": f"{self.api.url}{base}/files/f{n}"}})

        def create(handler, body):
            payload = json.loads(body)
            if handler.headers.get("Authorization") != "Bearer tok-123":
                return reply(handler, 401, {"detail": "Invalid token."})
            if payload["input"].get("seed") == -1:
                return reply(
                    handler,
                    422,
                    {
                        "title": "Input validation failed",
                        "status": 422,
                        "detail": "- seed: bad",
                        "invalid_fields": [
                            {
                                "type": "greater_than_equal",
                                "field": "input.seed",
                                "description": "Must be greater than or equal to 0",
                            }
                        ],
                    },
                )
            self.created = payload
            reply(
                handler,
                201,
                {
                    "id": "r1",
                    "status": "starting",
                    "logs": "",
                    "output": None,
                    "urls": {
                        "get": f"{self.api.url}{base}/predictions/r1",
                        "cancel": f"{self.api.url}{base}/predictions/r1/cancel",
                    },
                },
            )

        def get(handler, body):
            state = self.steps[min(self.polls, len(self.steps) - 1)]
            self.polls += 1
            reply(handler, 200, {"id": "r1", **state})

        def cancel(handler, body):
            self.canceled = True
            reply(handler, 200, {"id": "r1", "status": "canceled"})

        def model(handler, body):
            if handler.headers.get("Authorization") != "Bearer tok-123":
                return reply(handler, 401, {"detail": "Invalid token."})
            reply(
                handler,
                200,
                {
                    "owner": "me",
                    "name": "gamecraft",
                    "latest_version": {
                        "id": "abc123",
                        "openapi_schema": {
                            "components": {
                                "schemas": {
                                    "Input": {
                                        "properties": {"seed": {"type": "integer", "minimum": 0, "maximum": 2147483647}}
                                    }
                                }
                            }
                        },
                    },
                },
            )

        self.api = FakeUpstream(
            {
                ("GET", f"{base}/models/me/gamecraft"): model,
                ("POST", f"{base}/models/me/gamecraft/predictions"): create,
                ("POST", f"{base}/predictions"): create,
                ("GET", f"{base}/predictions/r1"): get,
                ("POST", f"{base}/predictions/r1/cancel"): cancel,
                ("POST", f"{base}/files"): upload,
            }
        )
        self.url = self.api.url + base


def _multipart(content_type: str, body: bytes) -> dict[str, dict]:
    """The parts of a multipart/form-data body: {name: {"filename", "content_type", "data"}}."""
    from email.parser import BytesParser
    from email.policy import HTTP

    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    parts = {}
    for part in message.iter_parts():
        parts[part.get_param("name", header="content-disposition")] = {
            "filename": part.get_filename(),
            "content_type": part.get_content_type(),
            "data": part.get_payload(decode=True),
        }
    return parts


STEPS = [
    {"status": "processing", "logs": "chunk 1 step 1/2\n", "output": None},
    {"status": "processing", "logs": "chunk 1 step 1/2\nchunk 1/2 done\n", "output": ["https://x/chunk001.mp4"]},
    {
        "status": "succeeded",
        "logs": "chunk 1 step 1/2\nchunk 1/2 done\nchunk 2/2 done\n",
        "output": [
            "https://x/chunk001.mp4",
            "https://x/chunk002.mp4",
            "https://x/video.mp4",
            "https://x/s.safetensors",
        ],
        "metrics": {"predict_time": 3.2},
    },
]
