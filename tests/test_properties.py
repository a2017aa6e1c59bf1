"""Property-based tests (Hypothesis): the action parser, camera invariants and the state loader."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gamecraft.pipeline import camera
from gamecraft.pipeline.actions import ACTIONS, ActionError, parse_actions
from gamecraft.pipeline.state import StateError, load_state
from gamecraft.testing.inputs import to_json_lists

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)


@SETTINGS
@given(actions=json_values, speeds=json_values)
def test_parser_only_ever_raises_action_errors(actions, speeds):
    for a, s in ((actions, speeds), (json.dumps(actions), json.dumps(speeds))):
        try:
            segments = parse_actions(a, s)
        except ActionError:
            continue
        assert 1 <= len(segments) <= 64


AXES = {"forward": ("w", "s"), "strafe": ("d", "a"), "yaw": ("left_rot", "right_rot"), "pitch": ("up_rot", "down_rot")}


@st.composite
def valid_segments(draw):
    """A random valid action list and its speeds."""
    actions, speeds = [], []
    for _ in range(draw(st.integers(1, 6))):
        axes = draw(st.lists(st.sampled_from(sorted(AXES)), min_size=1, max_size=4, unique=True))
        keys = [draw(st.sampled_from(AXES[axis])) for axis in axes]
        values = [draw(st.floats(0, 90 if axis in ("yaw", "pitch") else 3, allow_nan=False)) for axis in axes]
        actions.append("+".join(keys))
        speeds.append(values[0] if len(values) == 1 else values)
    return actions, speeds


@SETTINGS
@given(valid_segments())
def test_valid_lists_parse_and_round_trip(data):
    actions, speeds = data
    segments = parse_actions(json.dumps(actions), json.dumps(speeds))
    assert [s.label for s in segments] == actions
    assert parse_actions(*to_json_lists(segments)) == segments
    for segment in segments:
        poses = camera.segment_c2w(segment)
        rot = poses[:, :3, :3]
        assert np.allclose(rot @ rot.transpose(0, 2, 1), np.eye(3), atol=1e-9)
        assert np.allclose(np.linalg.det(rot), 1.0)
        assert np.allclose(poses[0], np.eye(4))


@SETTINGS
@given(key=st.sampled_from(sorted(ACTIONS)))
def test_zero_speed_is_identity(key):
    poses = camera.segment_c2w(parse_actions(json.dumps([key]), "[0]")[0])
    assert np.array_equal(poses, np.tile(np.eye(4), (34, 1, 1)))


@SETTINGS
@given(axis=st.sampled_from(sorted(AXES)), speed=st.floats(0.01, 3, allow_nan=False))
def test_reversing_a_move_returns_to_the_start(axis, speed):
    there, back = AXES[axis]
    chunks = [camera.chunk_poses(s) for s in parse_actions(json.dumps([there, back]), json.dumps([speed, speed]))]
    assert np.allclose(camera.world_poses(chunks)[-1], np.eye(4), atol=1e-9)


@SETTINGS
@given(data=st.binary(max_size=512))
def test_state_loader_refuses_arbitrary_bytes_cleanly(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("state") / "s.safetensors"
    path.write_bytes(data)
    with pytest.raises(StateError):
        load_state(path)
