"""A local HTTP server of a directory that answers ``Range`` requests (like object storage), with faults to
inject: the fetch of ``GAMECRAFT_WEIGHTS_URL`` is tested against it, and the cold-start benchmark measures
the fetch rate on the GPU machine with it."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class RangeServer(ThreadingHTTPServer):
    """``drop_after[path] = n``: the next response for ``path`` closes the connection after ``n`` bytes
    (once). ``corrupt[path] = k``: the next ``k`` responses for ``path`` that include byte 0 flip it."""

    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = Path(root).resolve()
        self.drop_after: dict[str, int] = {}
        self.corrupt: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class _Handler(BaseHTTPRequestHandler):
    server: RangeServer

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        rel = unquote(self.path.lstrip("/"))
        path = (self.server.root / rel).resolve()
        if self.server.root not in path.parents or not path.is_file():
            self.send_error(404)
            return
        size = path.stat().st_size
        header = self.headers.get("Range")
        with self.server.lock:
            self.server.requests.append((rel, header))
            drop = self.server.drop_after.pop(rel, None)
        start, end = 0, size - 1
        match = RANGE.match(header or "")
        if match:
            start = int(match.group(1))
            end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        with self.server.lock:
            flip = start == 0 and self.server.corrupt.get(rel, 0) > 0
            if flip:
                self.server.corrupt[rel] -= 1
        sent = 0
        with open(path, "rb") as f:
            f.seek(start)
            while sent < end - start + 1:
                block = f.read(min(1 << 20, end - start + 1 - sent))
                if flip and sent == 0:
                    block = bytes([block[0] ^ 0xFF]) + block[1:]
                if drop is not None and sent + len(block) > drop:
                    self.wfile.write(block[: drop - sent])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(block)
                sent += len(block)


@contextlib.contextmanager
def serve_directory(root: Path) -> Iterator[str]:
    """Serve ``root`` on 127.0.0.1 (a free port) while the block runs; yields the base URL."""
    with running_server(root) as server:
        yield server.url


@contextlib.contextmanager
def running_server(root: Path) -> Iterator[RangeServer]:
    server = RangeServer(root)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
