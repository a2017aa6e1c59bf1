"""Hostile inputs against the real server (tiny weights): each gets its exact failure, the server stays READY."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from PIL import Image
from safetensors.torch import save_file

from gamecraft.media.video import write_mp4
from gamecraft.pipeline.state import WorldState, save_state
from tools.cog_server import data_uri, start_cog_server

SIZE = (32, 48)


uri = data_uri


def png(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **kwargs)
    return buffer.getvalue()


IMAGE = uri((REPO_ROOT / "assets" / "start.png").read_bytes(), "image/png")
BASE = {"prompt": "a village", "num_inference_steps": 1, "return_state": False}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {
        "GAMECRAFT_WEIGHTS": "tiny",
        "GAMECRAFT_TINY_SIZE": f"{SIZE[0]}x{SIZE[1]}",
        "TMPDIR": str(tmp_path_factory.mktemp("hostile")),
        "CUDA_VISIBLE_DEVICES": "",
    }
    srv = start_cog_server(REPO_ROOT, "predict.py:Predictor", env, startup_timeout_s=240)
    yield srv
    srv.stop()


def _state_bytes(tmp: Path, **overrides) -> bytes:
    fields = dict(last_latents=torch.zeros(1, 16, 9, 4, 6), height=32, width=48, seed=1, chunks_done=1)
    fields.update(overrides)
    path = save_state(WorldState(**fields), tmp / "state.safetensors")
    return path.read_bytes()


def _video_bytes(tmp: Path, frames: int) -> bytes:
    return write_mp4(np.full((frames, 32, 48, 3), 128, dtype=np.uint8), tmp / f"v{frames}.mp4").read_bytes()


def _cases(tmp: Path) -> list[tuple[str, dict, int, str]]:
    """(name, inputs, expected HTTP status, expected text in the error/detail)."""
    bomb = png(Image.new("1", (12000, 12000)))  # 144 MP of 1-bit pixels: a few kB compressed
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    state_other_res = _state_bytes(tmp, height=64, width=96, last_latents=torch.zeros(1, 16, 9, 8, 12))
    tampered = tmp / "tampered.safetensors"
    tampered.write_bytes(_state_bytes(tmp))
    nan_state = tmp / "nan.safetensors"
    save_file(
        {"last_latents": torch.full((1, 16, 9, 4, 6), float("nan"))},
        str(nan_state),
        metadata={"gamecraft": json.dumps(WorldState(torch.zeros(1), 32, 48, 1, 1).metadata())},
    )
    pickled = io.BytesIO()
    torch.save({"last_latents": torch.zeros(1)}, pickled)
    rigid_row = "0 0.5 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0"
    skew_row = "0 0.5 0.9 0.5 0.5 0 0 1 0.5 0 0 0 1 0 0 0 0 1 0"
    return [
        # JSON inputs
        ("actions not a list", {"actions": "{}"}, 422, "actions"),
        ("actions unclosed", {"actions": '["w"'}, 422, "actions"),
        ("actions not JSON", {"actions": "[w, s]"}, 200, "actions: not valid JSON"),
        (
            "actions deeply nested",
            {"actions": "[" * 50 + "]" * 50, "action_speeds": "[0]"},
            200,
            "actions[0]: expected a string",
        ),
        (
            "actions huge",
            {"actions": json.dumps(["w"] * 5000), "action_speeds": json.dumps([0.2] * 5000)},
            200,
            "actions: 5000 actions given; at most 64 chunks per request",
        ),
        ("unknown action", {"actions": '["jump"]', "action_speeds": "[1]"}, 200, "actions[0]: unknown action 'jump'"),
        (
            "mixed-case unknown",
            {"actions": '["W+Jump"]', "action_speeds": "[[1, 1]]"},
            200,
            "actions[0]: unknown action 'jump'",
        ),
        ("NaN speed", {"actions": '["w"]', "action_speeds": "[NaN]"}, 200, "must be finite, got nan"),
        ("infinite speed", {"actions": '["w"]', "action_speeds": "[Infinity]"}, 200, "must be finite, got inf"),
        ("negative speed", {"actions": '["d"]', "action_speeds": "[-1]"}, 200, "must be >= 0 (use 'a'"),
        ("string speed", {"actions": '["w"]', "action_speeds": '["0.2"]'}, 200, "must be a number, got string"),
        ("too fast", {"actions": '["w"]', "action_speeds": "[30]"}, 200, "the maximum is 3 per chunk"),
        (
            "length mismatch",
            {"actions": '["w", "s", "d"]', "action_speeds": "[0.2]"},
            200,
            "action_speeds: 1 speed(s) for 3 action(s)",
        ),
        ("empty list", {"actions": "[]", "action_speeds": "[]"}, 200, "actions: the list is empty"),
        ("prompt 100k", {"prompt": "x" * 100_000}, 422, "prompt"),
        ("negative prompt too long", {"negative_prompt": "y" * 2001}, 422, "negative_prompt"),
        ("seed out of range", {"seed": -1}, 422, "seed"),
        ("steps too many", {"num_inference_steps": 1000}, 422, "num_inference_steps"),
        ("guidance below 1", {"guidance_scale": 0.0}, 422, "guidance_scale"),
        ("bad preset", {"preset": "FULL"}, 422, "preset"),
        ("null seed", {"seed": None}, 422, "seed"),
        # images
        ("decompression bomb", {"image": uri(bomb, "image/png")}, 200, "image"),
        ("truncated png", {"image": uri(png(Image.new("RGB", (64, 64), "red"))[:60], "image/png")}, 200, "image"),
        ("not an image", {"image": uri(b"#!/bin/sh\necho pwned\n", "image/png")}, 200, "not a readable image"),
        ("1x1 image", {"image": uri(png(Image.new("RGB", (1, 1))), "image/png")}, 200, "image"),
        ("empty image", {"image": uri(b"", "image/png")}, 200, "image"),
        # files of the wrong kind
        (
            "video too short",
            {"image": None, "video": uri(_video_bytes(tmp, 12), "video/mp4")},
            200,
            "video has 12 frames; starting from a video needs at least 33",
        ),
        (
            "video undecodable",
            {"image": None, "video": uri(b"\x00\x00\x00\x18ftypmp42garbage", "video/mp4")},
            200,
            "could not decode",
        ),
        (
            "state truncated",
            {"image": None, "continue_from": uri(_state_bytes(tmp)[:-40])},
            200,
            "state file: not a readable safetensors file",
        ),
        (
            "state other resolution",
            {"image": None, "continue_from": uri(state_other_res)},
            200,
            "state file: made at 64×96; this request generates 32×48",
        ),
        (
            "state with NaNs",
            {"image": None, "continue_from": uri(nan_state.read_bytes())},
            200,
            "state file: last_latents contains NaN or infinite values",
        ),
        (
            "state is a pickle",
            {"image": None, "continue_from": uri(pickled.getvalue())},
            200,
            "state file: not a readable safetensors file",
        ),
        ("state is an image", {"image": None, "continue_from": IMAGE}, 200, "state file: not a readable safetensors"),
        (
            "trajectory bad row",
            {"trajectory": uri(b"1 2 3\n", "text/plain")},
            200,
            "trajectory line 1: expected 19 numbers",
        ),
        (
            "trajectory not rigid",
            {"trajectory": uri(("\n".join([rigid_row] * 32 + [skew_row])).encode(), "text/plain")},
            200,
            "trajectory line 33: the 3×3 part is not a rotation",
        ),
        (
            "trajectory wrong count",
            {"trajectory": uri(("\n".join([rigid_row] * 40)).encode(), "text/plain")},
            200,
            "trajectory: 40 poses; it needs 33 per chunk",
        ),
        ("trajectory binary", {"trajectory": uri(b"\xff\xfe\xfd")}, 200, "trajectory: not a UTF-8 text file"),
        ("two starts", {"video": IMAGE}, 200, "give exactly one of image, video or continue_from (got image, video)"),
        ("no start", {"image": None}, 200, "give exactly one of image, video or continue_from (got none)"),
        # accepted oddities: these must succeed
        ("mixed-case actions are accepted", {"actions": '["W", " Look_Left "]', "action_speeds": "[0.2, 10]"}, 200, ""),
        ("transparent image is accepted", {"image": uri(png(rgba), "image/png")}, 200, ""),
        ("palette image is accepted", {"image": uri(png(Image.new("P", (64, 40))), "image/png")}, 200, ""),
        ("16-bit image is accepted", {"image": uri(png(Image.new("I;16", (64, 40))), "image/png")}, 200, ""),
        ("extreme aspect is accepted", {"image": uri(png(Image.new("RGB", (16, 2000), "blue")), "image/png")}, 200, ""),
    ]


def test_hostile_inputs(server, tmp_path):
    cases = _cases(tmp_path)
    assert len(cases) >= 40
    failures = []
    for name, extra, status, text in cases:
        inputs = {**BASE, "image": IMAGE, "actions": '["w"]', "action_speeds": "[0.2]", **extra}
        inputs = {k: v for k, v in inputs.items() if v is not None or name == "null seed"}
        got_status, body = server.predict(inputs, timeout=300)
        if status == 422:
            ok = got_status == 422 and any(text in d["loc"] for d in body.get("detail", []))
        elif text:
            ok = got_status == 200 and body.get("status") == "failed" and text in (body.get("error") or "")
        else:
            ok = got_status == 200 and body.get("status") == "succeeded"
        health = server.wait_until_ready(30)
        if not ok or health != "READY":
            failures.append(f"{name}: HTTP {got_status}, health {health}: {json.dumps(body)[:300]}")
    assert not failures, "\n".join(failures)
