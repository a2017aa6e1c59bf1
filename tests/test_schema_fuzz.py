"""schemathesis against the running server's OpenAPI schema (tiny weights, CPU).

Requests are generated from coglet's own schema, positive (valid per schema) and negative (violating it).
File inputs are replaced by local data URIs before sending — a generated URL would make coglet fetch from
the network. The server runs with a small time budget so that large valid requests are refused by the
budget check instead of generating minutes of video. Every response must be a 422 with a reason (or 400 for a
body that is not an object), or a prediction that succeeded or failed with a message; never a server error,
and the server stays READY.
"""

from __future__ import annotations

import hashlib

import pytest
from conftest import REPO_ROOT
from hypothesis import HealthCheck, given, settings

from gamecraft.ui.server import PREDICTION_ID
from tools.cog_server import data_uri, request_json, start_cog_server

schemathesis = pytest.importorskip("schemathesis")

SAFE_ID = PREDICTION_ID  # what the controller page's server forwards
IMAGE = data_uri(REPO_ROOT / "assets" / "start.png", "image/png")
FILE_INPUTS = ("image", "video", "continue_from", "trajectory")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_cog_server(
        REPO_ROOT,
        "predict.py:Predictor",
        {
            "GAMECRAFT_WEIGHTS": "tiny",
            "GAMECRAFT_TINY_SIZE": "32x48",
            "CUDA_VISIBLE_DEVICES": "",
            "TMPDIR": str(tmp_path_factory.mktemp("fuzz")),
            "GAMECRAFT_TIME_BUDGET_S": "8",
        },
        startup_timeout_s=240,
    )
    yield srv
    srv.stop()


def _local_files(body):
    """Keep every file input on a local data URI (or absent), and a generated prediction ``id`` to one coglet
    can make a directory of (see the test below; on Replicate the platform sets ids, and the page server
    refuses others); leave the rest as generated."""
    if isinstance(body, dict) and isinstance(body.get("id"), str) and not SAFE_ID.fullmatch(body["id"]):
        body["id"] = "fuzz-" + hashlib.sha256(repr(body["id"]).encode()).hexdigest()[:16]
    if isinstance(body, dict) and isinstance(body.get("input"), dict):
        for key in FILE_INPUTS:
            if key in body["input"]:
                body["input"][key] = IMAGE if key == "image" else data_uri(b"not a real file")
    return body


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_generated_requests_never_break_the_server(server, mode):
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operation = schema["/predictions"]["POST"]
    strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))
    seen: dict[int, int] = {}

    @settings(
        max_examples=25,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    @given(case=strategy)
    def check(case):
        body = _local_files(case.body if isinstance(case.body, dict) else {"input": {}})
        status, reply = request_json("POST", f"{server.url}/predictions", body, timeout=120)
        seen[status] = seen.get(status, 0) + 1
        assert status < 500, reply
        if status == 422:  # coglet: pydantic-style details, or a plain message for a body of the wrong shape
            assert reply.get("detail") if isinstance(reply, dict) else reply.strip(), reply
        elif status == 200:
            assert reply["status"] in ("succeeded", "failed"), reply
            if reply["status"] == "failed":
                assert reply.get("error"), reply
        else:
            assert status in (400, 409), (status, reply)
        # the server's own log says why it is still busy (a prediction the budget let through, a stuck cleanup)
        assert server.wait_until_ready(60) == "READY", (body, server.logs(6000))

    check()
    print(mode, "responses by status:", seen)
    assert sum(seen.values()) >= 10, seen


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="coglet 0.23.1 makes <tmp>/coglet/predictions/<id>/ from the client's id: a NUL byte fails that, "
    "and the slot stays busy until the server restarts; an absolute id puts the directory elsewhere",
)
def test_coglet_survives_prediction_ids_it_cannot_make_a_directory_of(tmp_path):
    """Strict: passes (as an expected failure) while coglet has the bug, and fails once a coglet release fixes
    it, so the page server's id check and docs/serving-notes.md can be revisited then."""
    srv = start_cog_server(
        REPO_ROOT,
        "predict.py:Predictor",
        {"GAMECRAFT_WEIGHTS": "tiny", "GAMECRAFT_TINY_SIZE": "32x48", "CUDA_VISIBLE_DEVICES": ""}
        | {"TMPDIR": str(tmp_path)},
        startup_timeout_s=240,
    )
    try:
        elsewhere = tmp_path / "elsewhere"
        request_json("POST", f"{srv.url}/predictions", {"id": str(elsewhere), "input": {}}, timeout=60)
        outside = elsewhere.exists()
        status, _ = request_json("POST", f"{srv.url}/predictions", {"id": "a\x00b", "input": {}}, timeout=60)
        assert status == 422 or srv.wait_until_ready(10) == "READY"
        assert not outside
    finally:
        srv.stop()
