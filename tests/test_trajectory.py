"""Custom trajectory files: round trips against the action path and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gamecraft.pipeline import camera
from gamecraft.pipeline.actions import parse_actions
from gamecraft.pipeline.trajectory import TrajectoryError, load_trajectory, parse_c2w_json, parse_pose_text
from gamecraft.testing.inputs import chunks_to_pose_text

ACTIONS = parse_actions('["w+left_rot", "d", "up_rot"]', "[[0.6, 25], 0.4, 15]")


def _action_chunks():
    return [camera.chunk_poses(s) for s in ACTIONS]


def _rows_text(chunks):
    return chunks_to_pose_text(chunks, header="https://example.invalid/video")


def test_pose_text_round_trip_gives_the_same_conditioning():
    chunks = _action_chunks()
    parsed = parse_pose_text(_rows_text(chunks))
    assert len(parsed) == 3
    for ours, theirs in zip(chunks, parsed, strict=False):
        assert np.allclose(theirs.c2w, ours.c2w, atol=1e-9)
        assert np.allclose(theirs.intrinsics, ours.intrinsics)
        cond_a, _ = camera.chunk_plucker(ours, 8, 14)
        cond_b, _ = camera.chunk_plucker(theirs, 8, 14)
        assert torch.allclose(cond_a, cond_b, atol=1e-5)
    # chunk j+1 starts where chunk j's 34th pose (the advance) is
    assert np.allclose(parsed[0].advance, chunks[0].advance, atol=1e-9)


def test_json_c2w_round_trip_and_pixel_intrinsics(tmp_path):
    chunks = _action_chunks()
    world = camera.world_poses(chunks)[:-1]
    path = tmp_path / "path.json"
    path.write_text(json.dumps({"c2w": world.tolist(), "intrinsics": [0.50505, 0.8979, 0.5, 0.5]}))
    parsed = load_trajectory(path)
    for ours, theirs in zip(chunks, parsed, strict=False):
        assert np.allclose(theirs.c2w, ours.c2w, atol=1e-9)
    # intrinsics in pixels of another frame size give the same pixel intrinsics after rescaling
    text = _rows_text(chunks[:1]).replace("0.50505 0.8979 0.5 0.5", "323.232 574.656 320.0 320.0")
    (tmp_path / "px.txt").write_text(text)
    px = load_trajectory(tmp_path / "px.txt")[0]
    assert torch.allclose(
        camera.intrinsics_px(64, 112, px.intrinsics), camera.intrinsics_px(64, 112, chunks[0].intrinsics)
    )


def test_plain_list_json_uses_reference_intrinsics():
    parsed = parse_c2w_json(json.dumps([np.eye(4).tolist()] * 33))
    assert len(parsed) == 1 and np.allclose(parsed[0].intrinsics, camera.REFERENCE_INTRINSICS)


def _identity_row(index=0, **overrides):
    values = [index, 0.50505, 0.8979, 0.5, 0.5, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]
    for position, value in overrides.items():
        values[int(position[1:])] = value
    return " ".join(str(v) for v in values)


BAD_TEXT = [
    ("\n".join([_identity_row()] * 32), "trajectory: 32 poses; it needs 33 per chunk (33, 66, 99, …)"),
    ("", "trajectory: no poses found"),
    (
        "\n".join([_identity_row()] * 5 + ["1 2 3"]),
        "trajectory line 6: expected 19 numbers (timestamp fx fy cx cy k1 k2 and a 3×4 world-to-camera matrix), got 3",
    ),
    ("\n".join([_identity_row()] * 3 + ["a b c"]), "trajectory line 4: not a row of numbers: 'a b c'"),
    (
        "\n".join([_identity_row(), _identity_row(c7=2.0)]),
        "trajectory line 2: the 3×3 part is not a rotation (max |R·Rᵀ − I| = 3, det = 2); "
        "poses must be rigid transforms",
    ),
    ("\n".join([_identity_row(c10="nan")]), "trajectory line 1: contains a non-finite number"),
    ("\n".join([_identity_row(c1=0)]), "trajectory line 1: intrinsics fx fy cx cy must be positive"),
    ("\n".join([_identity_row(c10=1e6)]), "trajectory line 1: translation 1e+06 exceeds 10000 units"),
]


@pytest.mark.parametrize("text,message", BAD_TEXT)
def test_bad_pose_text(text, message):
    with pytest.raises(TrajectoryError) as info:
        parse_pose_text(text)
    assert str(info.value) == message


BAD_JSON = [
    ("{", "trajectory: not valid JSON (Expecting property name enclosed in double quotes at line 1 column 2)"),
    (
        '{"poses": []}',
        'trajectory: a JSON object needs the key "c2w" (and optionally "intrinsics"); got keys [\'poses\']',
    ),
    ('"x"', "trajectory: expected a JSON list of 4×4 camera-to-world matrices"),
    (json.dumps([[[1, 0, 0], [0, 1, 0], [0, 0, 1]]] * 33), "trajectory matrix 0: expected shape 4×4, got 3×3"),
    (json.dumps([np.diag([1, 1, 1, 2]).tolist()] * 33), "trajectory matrix 0: the last row must be [0, 0, 0, 1]"),
    (
        json.dumps([np.eye(4).tolist()] * 32 + [np.diag([1, -1, 1, 1]).tolist()]),
        "trajectory matrix 32: the 3×3 part is not a rotation (max |R·Rᵀ − I| = 0, det = -1); "
        "poses must be rigid transforms",
    ),
    (
        json.dumps({"c2w": [np.eye(4).tolist()] * 33, "intrinsics": [1, 2, 3]}),
        "trajectory: intrinsics must be 4 positive numbers [fx, fy, cx, cy] (normalized)",
    ),
    (json.dumps([np.eye(4).tolist()] * 66), None),
]


@pytest.mark.parametrize("text,message", BAD_JSON)
def test_bad_json(text, message):
    if message is None:
        assert len(parse_c2w_json(text)) == 2
        return
    with pytest.raises(TrajectoryError) as info:
        parse_c2w_json(text)
    assert str(info.value) == message


def test_chunk_limit_and_file_checks(tmp_path):
    with pytest.raises(TrajectoryError, match=r"^trajectory: 2 chunks; at most 1 per request$"):
        parse_c2w_json(json.dumps([np.eye(4).tolist()] * 66), max_chunks=1)
    with pytest.raises(TrajectoryError, match=r"^trajectory: more than 1 chunks \(33 poses\)$"):
        parse_pose_text("\n".join([_identity_row()] * 34), max_chunks=1)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TrajectoryError, match=r"^trajectory: not a UTF-8 text file$"):
        load_trajectory(binary)
