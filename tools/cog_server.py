"""Start Cog's real HTTP server (coglet) on 127.0.0.1 without Docker (the main job, tests, benchmarks).

``start_cog_server(cwd, "predict.py:Predictor")`` runs ``python -m cog.server.http`` in
``cwd`` and waits until ``/health-check`` reports READY. coglet validates inputs only if
``cwd/.cog/openapi_schema.json`` exists (write it with ``tools/cog_schema.py``), and it starts
its worker as a bare ``python``, so this venv's ``bin`` goes first on PATH; with another
``python`` found first the health stays STARTING forever.

All waits are bounded; ``stop()`` sends SIGTERM (graceful in about 1 s) and kills the
server's process group if it does not exit.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def data_uri(data: bytes | Path, mime: str = "application/octet-stream") -> str:
    """A ``data:`` URI of ``data`` (bytes, or a file's contents): how tests send files to coglet."""
    raw = Path(data).read_bytes() if isinstance(data, Path) else data
    return f"data:{mime};base64," + base64.b64encode(raw).decode()


def save_data_uri(uri: str, path: Path) -> Path:
    """Write the payload of a ``data:`` URI (an output coglet inlined) to ``path``."""
    path.write_bytes(base64.b64decode(uri.split(",", 1)[1]))
    return path


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request_json(
    method: str, url: str, body: Any = None, timeout: float = 30.0, headers: dict | None = None
) -> tuple[int, Any]:
    """(HTTP status, decoded JSON body or text) of one request; 4xx/5xx do not raise."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


@dataclass
class CogServer:
    """A running coglet server: ``url`` is ``http://127.0.0.1:<port>``."""

    url: str
    process: subprocess.Popen
    log_path: Path

    def logs(self, tail_chars: int = 4000) -> str:
        """The server's stdout+stderr so far (ANSI colours removed), last ``tail_chars``."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return _ANSI.sub("", text)[-tail_chars:]

    def health(self, timeout: float = 5.0) -> dict:
        status, body = request_json("GET", f"{self.url}/health-check", timeout=timeout)
        if status != 200 or not isinstance(body, dict):
            raise RuntimeError(f"/health-check answered {status}: {body!r}")
        return body

    def wait_until_ready(self, timeout_s: float = 10.0) -> str:
        """Poll ``/health-check`` until READY or ``timeout_s``; returns the last status.

        coglet 0.23.1 answers a sync prediction a moment before it frees the slot, so right
        after a response the health can still read BUSY.
        """
        deadline = time.monotonic() + timeout_s
        while (status := self.health().get("status")) != "READY" and time.monotonic() < deadline:
            time.sleep(0.05)
        return status

    def predict(self, inputs: dict, timeout: float = 60.0, busy_retry_s: float = 10.0, **extra: Any) -> tuple[int, Any]:
        """A synchronous ``POST /predictions`` -> (HTTP status, body).

        409 "At capacity" is retried for up to ``busy_retry_s``: back to back, about one
        request in ten hits the previous prediction's not-yet-freed slot (the prediction never
        started, so retrying is safe). A client timeout cancels the prediction server-side.
        """
        deadline = time.monotonic() + busy_retry_s
        while True:
            status, body = request_json("POST", f"{self.url}/predictions", {"input": inputs, **extra}, timeout=timeout)
            if status != 409 or time.monotonic() >= deadline:
                return status, body
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait up to ``timeout`` s, SIGKILL the process group; deletes the log."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=timeout)
        # The worker is coglet's child in the same session; make sure none outlives the test.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.log_path.unlink(missing_ok=True)


def start_cog_server(
    cwd: Path,
    predictor_ref: str,
    env: dict[str, str] | None = None,
    *,
    startup_timeout_s: float = 60.0,
    python: str = sys.executable,
    port: int | None = None,
) -> CogServer:
    """Start ``python -m cog.server.http --host 127.0.0.1`` in ``cwd`` and wait for READY.

    ``predictor_ref`` is ``file.py:Class`` relative to ``cwd``; ``env`` adds variables (e.g. a
    fake-model switch). Raises RuntimeError with the server log on SETUP_FAILED, early exit
    or timeout; the server is stopped in those cases.
    """
    cwd = Path(cwd)
    port = port or free_port()
    # sys.executable's folder, not its resolved target: the venv's bin holds the `python`
    # that sees coglet.
    bin_dir = str(Path(python).parent)
    full_env = {
        **os.environ,
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
        "PORT": str(port),
        "COG_PREDICT_TYPE_STUB": predictor_ref,
        "LOG_FORMAT": "console",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    # The log lives outside cwd (which may be the repository) and is deleted by stop().
    fd, log_name = tempfile.mkstemp(prefix=f"cog-server-{port}-", suffix=".log")
    os.close(fd)
    log_path = Path(log_name)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [python, "-m", "cog.server.http", "--host", "127.0.0.1"],
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop() can reap the worker too
        )
    server = CogServer(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    try:
        _wait_until_ready(server, startup_timeout_s)
    except BaseException:  # also Ctrl-C: never leave a server behind
        server.stop()
        raise
    return server


def _wait_until_ready(server: CogServer, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"cog server exited with {server.process.returncode}:\n{server.logs()}")
        try:
            health = server.health(timeout=2.0)
        except (OSError, RuntimeError) as err:  # not listening yet
            last = str(err)
        else:
            last = health.get("status", "?")
            if last == "READY":
                return
            if last in ("SETUP_FAILED", "DEFUNCT", "UNHEALTHY"):
                setup_logs = (health.get("setup") or {}).get("logs", "")
                raise RuntimeError(f"cog server setup failed ({last}):\n{setup_logs}")
        time.sleep(0.2)
    raise RuntimeError(f"cog server not READY within {timeout_s:.0f} s (last: {last}):\n{server.logs()}")
