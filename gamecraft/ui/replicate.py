"""The controller page's Replicate backend: a model on Replicate presented to the page as a Cog server.

It creates the prediction with Replicate's HTTP API (``POST /v1/predictions`` with the pinned version, or
the model's latest version read from ``GET /v1/models/{owner}/{name}`` just before: the models endpoint
takes only Replicate's official models), polls it, and turns what changes between polls into coglet's
Server-Sent Events (``start``, ``log``, ``metric``, ``output``, ``completed``), so the page has one code
path. Files the page sends as data URIs (start images, state files of several MB) go through Replicate's
files API (``POST /v1/files``, the input is then the file's URL) above the size Replicate recommends for data
URIs. Replicate's input-validation 422 is reshaped as coglet's ``{"detail": [{"loc": …, "msg": …}]}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

from gamecraft.ui.upstream import UPSTREAM_TIMEOUT_S, Upstream, json_answer, open_url

HEALTH_CACHE_S = 30.0  # the page polls its server every few seconds; ask Replicate at most this often
# Replicate's docs ("Input files") recommend a data URI only for a file under 1 MB; larger ones are uploaded
DATA_URI_MAX_BYTES = 1_000_000
EXTENSIONS = {
    "application/octet-stream": ".safetensors",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "video/mp4": ".mp4",
}


class _Refused(Exception):
    """Replicate refused a step of creating the prediction: its status and body, passed on to the page."""

    def __init__(self, status: int, body: Any):
        super().__init__(status)
        self.status, self.body = status, body


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class ReplicateBackend:
    """A model on Replicate: ``owner/name`` (latest version, models endpoint) or ``owner/name:version``."""

    name = "replicate"

    def __init__(
        self,
        model: str,
        token: str,
        api: str = "https://api.replicate.com/v1",
        poll_s: float = 1.0,
        timeout_s: float = UPSTREAM_TIMEOUT_S,
    ):
        if not re.fullmatch(r"[\w.-]+/[\w.-]+(:[0-9a-f]+)?", model):
            raise ValueError(f"--replicate {model!r}: expected owner/name or owner/name:version")
        if not token:
            raise ValueError("the Replicate backend needs an API token: set REPLICATE_API_TOKEN")
        self.model, _, self.version = model.partition(":")
        self.token, self.api, self.poll_s, self.timeout_s = token, api.rstrip("/"), poll_s, timeout_s
        self._health: tuple[float, Upstream] | None = None

    def config(self) -> dict:
        """What the page shows and writes its commands with; ``latest_version`` when no version is pinned."""
        latest = None
        if not self.version:
            try:
                latest = self._latest_version()
            except (OSError, _Refused):
                latest = None  # the badge says why (health)
        return {
            "backend": self.name,
            "model": self.model,
            "version": self.version or None,
            "latest_version": latest,
            "api": self.api,
        }

    def _request(
        self, method: str, path: str, payload: Any = None, timeout: float = 60, raw: tuple[bytes, str] | None = None
    ) -> tuple[int, Any]:
        """JSON ``payload`` (or ``raw`` = (body, content type)) to ``path``; the status and the JSON answer."""
        body = raw[0] if raw else None if payload is None else json.dumps(payload).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": raw[1] if raw else "application/json"}
        with open_url(method, path if path.startswith("http") else self.api + path, body, headers, timeout) as resp:
            raw = resp.read()
            try:
                return resp.status, json.loads(raw)
            except ValueError:
                return resp.status, {"detail": raw.decode("utf-8", "replace")}

    def _model_path(self) -> str:
        return f"/models/{self.model}/versions/{self.version}" if self.version else f"/models/{self.model}"

    def health(self) -> Upstream:
        """READY when Replicate answers for the model (the token works); cached for HEALTH_CACHE_S."""
        now = time.monotonic()
        if self._health and now - self._health[0] < HEALTH_CACHE_S:
            return self._health[1]
        try:
            status, body = self._request("GET", self._model_path(), timeout=10)
        except OSError as err:
            answer = json_answer(502, {"detail": f"cannot reach Replicate at {self.api} ({_reason(err)})"})
        else:
            answer = (
                json_answer(200, {"status": "READY", "backend": "replicate"})
                if status == 200
                else json_answer(
                    502 if status >= 500 else status, {"detail": f"Replicate answered {status}: {_short_detail(body)}"}
                )
            )
        self._health = (now, answer)
        return answer

    def schema(self) -> Upstream:
        """The model's OpenAPI schema (the latest version's, or the pinned version's)."""
        try:
            status, body = self._request("GET", self._model_path(), timeout=30)
        except OSError as err:
            return json_answer(502, {"detail": f"cannot reach Replicate at {self.api} ({_reason(err)})"})
        if status != 200:
            return json_answer(status, body)
        version = body if self.version else (body.get("latest_version") or {})
        return json_answer(200, version.get("openapi_schema") or {})

    def cancel(self, prediction_id: str) -> Upstream:
        status, body = self._request("POST", f"/predictions/{prediction_id}/cancel")
        return json_answer(status, body)

    def predict(self, body: bytes, headers: dict[str, str]) -> Upstream:
        try:
            inputs = json.loads(body or b"{}").get("input", {})
        except (ValueError, AttributeError):
            return json_answer(400, {"detail": "body must be a JSON object with an 'input' object"})
        try:
            version = self.version or self._latest_version()
            inputs = {name: self._as_url(name, value) for name, value in inputs.items()}
            status, created = self._request("POST", "/predictions", {"version": version, "input": inputs})
        except OSError as err:
            return json_answer(502, {"detail": f"cannot reach Replicate at {self.api} ({_reason(err)})"})
        except _Refused as err:
            return json_answer(*_cog_style_error(err.status, err.body))
        if status not in (200, 201):
            return json_answer(*_cog_style_error(status, created))
        if "text/event-stream" in headers.get("Accept", ""):
            return Upstream(200, "text/event-stream", stream=self._events(created))
        *_, final = self._poll(created)  # the last poll: finished (or timed out)
        return json_answer(200, final)

    def _latest_version(self) -> str:
        """The id of the model's latest version (a model pushed with ``cog push`` is run by version)."""
        status, body = self._request("GET", f"/models/{self.model}", timeout=30)
        if status != 200:
            raise _Refused(status, body)
        version = (body.get("latest_version") or {}).get("id")
        if not version:
            raise _Refused(404, {"detail": f"Replicate model {self.model} has no version yet: push one with cog push"})
        return version

    def _as_url(self, name: str, value: Any) -> Any:
        """A data URI above DATA_URI_MAX_BYTES, uploaded with Replicate's files API, as the file's URL."""
        if not (isinstance(value, str) and value.startswith("data:")):
            return value
        head, _, payload = value.partition(",")
        if len(payload) * 3 // 4 <= DATA_URI_MAX_BYTES:
            return value
        try:
            data = base64.b64decode(payload, validate=True) if ";base64" in head else payload.encode()
        except binascii.Error:
            raise _Refused(422, {"detail": [{"loc": ["body", "input", name], "msg": "not a valid data URI"}]}) from None
        mime = head[5:].split(";")[0] or "application/octet-stream"
        filename = name + (EXTENSIONS.get(mime) or mimetypes.guess_extension(mime) or ".bin")
        boundary = uuid.uuid4().hex
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="content"; filename="{filename}"\r\n'
                f"Content-Type: {mime}\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        status, file = self._request(
            "POST", "/files", timeout=300, raw=(body, f"multipart/form-data; boundary={boundary}")
        )
        if status not in (200, 201) or not (file.get("urls") or {}).get("get"):
            raise _Refused(
                502 if status < 400 else status,
                {"detail": f"uploading {name} to Replicate failed: {_short_detail(file)}"},
            )
        return file["urls"]["get"]

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
        logs_sent, outputs_sent, metrics_sent, last = 0, 0, {}, created
        try:
            for last in self._poll(created):
                logs = last.get("logs") or ""
                if len(logs) > logs_sent:
                    for line in logs[logs_sent:].splitlines(keepends=True):
                        yield _sse("log", {"data": line, "source": "stderr"})
                    logs_sent = len(logs)
                for name, value in (last.get("metrics") or {}).items():
                    if metrics_sent.get(name) != value:  # what changed since the last poll, as coglet's "replace"
                        metrics_sent[name] = value
                        yield _sse("metric", {"name": name, "value": value, "mode": "replace"})
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


def _reason(err: BaseException) -> str:
    reason = getattr(err, "reason", None) or err
    return str(getattr(reason, "strerror", None) or reason)


def _short_detail(body: Any) -> str:
    detail = body.get("detail") or body.get("title") if isinstance(body, dict) else body
    text = str(detail)
    return text if len(text) <= 200 else text[:200] + "…"


def _cog_style_error(status: int, body: Any) -> tuple[int, Any]:
    """Replicate's input-validation answers, reshaped as coglet's 422 so the page shows them per field."""
    if status == 422 and isinstance(body, dict) and isinstance(body.get("invalid_fields"), list):
        detail = [
            {
                "loc": ["body", *str(f.get("field", "input")).split(".")],
                "msg": f.get("description", ""),
                "type": f.get("type", "value_error"),
            }
            for f in body["invalid_fields"]
        ]
        return 422, {"detail": detail}
    return status, body
