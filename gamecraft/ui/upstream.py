"""What the page's server relays: an upstream answer (a body or a byte stream) and the HTTP helpers."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

UPSTREAM_TIMEOUT_S = 3600.0  # a prediction may take up to Replicate's 30 min; SSE lines flow meanwhile


@dataclass
class Upstream:
    """An upstream answer: status, content type, extra headers and either a body or a byte stream."""

    status: int
    content_type: str
    body: bytes = b""
    stream: Iterator[bytes] | None = None
    close: Callable[[], None] = lambda: None
    headers: dict[str, str] = field(default_factory=dict)


def json_answer(status: int, payload: Any) -> Upstream:
    return Upstream(status, "application/json", body=json.dumps(payload).encode())


def open_url(method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: float):
    """urllib request that returns the response object for any status (4xx/5xx included)."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as err:
        return err


def iter_response(resp) -> Iterator[bytes]:
    while True:
        piece = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
        if not piece:
            return
        yield piece
