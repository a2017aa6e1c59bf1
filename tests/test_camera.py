"""Camera math: parity with the official goldens, axis conventions and invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gamecraft.parity import run_sections
from gamecraft.pipeline import camera
from gamecraft.pipeline.actions import parse_actions, single


def test_actions_parity_section_passes(golden_dir):
    results = run_sections(golden_dir, ["actions"])
    assert len(results) > 50
    failures = [r.line() for r in results if not r.ok]
    assert not failures, "\n".join(failures)


def _relative(action: str, speed: float) -> torch.Tensor:
    return camera.relative_c2w(camera.chunk_poses(single(action, speed)).c2w)


@pytest.mark.parametrize("action,axis,sign", [("w", 2, +1), ("s", 2, -1), ("a", 0, -1), ("d", 0, +1)])
def test_translation_axes(action, axis, sign):
    c2w = _relative(action, 1.5)
    final = c2w[-1, :3, 3]
    # 32/33 of the value reached in the last used frame (reference quirk Q5), ×10 scale.
    assert final[axis].item() == pytest.approx(sign * 1.5 * 32 / 33 * camera.TRANSLATION_SCALE, rel=1e-6)
    assert torch.count_nonzero(final).item() == 1
    assert torch.equal(c2w[:, :3, :3], torch.eye(3).expand(33, 3, 3))


@pytest.mark.parametrize(
    "action,component,sign", [("left_rot", 0, -1), ("right_rot", 0, +1), ("up_rot", 1, -1), ("down_rot", 1, +1)]
)
def test_rotation_turns_the_forward_axis(action, component, sign):
    forward = _relative(action, 30)[-1, :3, 2]
    assert forward[component].item() == pytest.approx(sign * math.sin(math.radians(30 * 32 / 33)), abs=1e-6)
    assert forward[2].item() == pytest.approx(math.cos(math.radians(30 * 32 / 33)), abs=1e-6)
    assert torch.count_nonzero(_relative(action, 30)[:, :3, 3]).item() == 0


def test_poses_are_rigid_for_combined_actions():
    for segment in parse_actions(
        '["w+left_rot", "d+up_rot", "s+a+right_rot+down_rot"]', "[[1, 45], [2, 30], [0.5, 0.5, 60, 20]]"
    ):
        poses = camera.segment_c2w(segment)
        rotations = poses[:, :3, :3]
        assert np.allclose(rotations @ rotations.transpose(0, 2, 1), np.eye(3), atol=1e-12)
        assert np.allclose(np.linalg.det(rotations), 1.0)
        assert np.allclose(poses[:, 3], [0, 0, 0, 1])


def test_combined_move_and_turn_follows_the_heading():
    segment = parse_actions('["w+left_rot"]', "[[1.0, 90]]")[0]
    poses = camera.segment_c2w(segment, frames=33)
    end = poses[-1]
    # walking forward while turning left by 90° traces a quarter circle of arc length 1: the
    # end point is (−r, 0, r) with r = 2/π; the midpoint rule is accurate to ~1e-4 at 33 steps.
    radius = 2 / math.pi
    assert end[0, 3] == pytest.approx(-radius, abs=1e-3)
    assert end[2, 3] == pytest.approx(radius, abs=1e-3)
    assert end[1, 3] == 0
    assert np.allclose(end[:3, 2], [-1, 0, 0], atol=1e-12)  # now looking toward −x


def test_walking_while_looking_up_stays_horizontal():
    poses = camera.segment_c2w(parse_actions('["w+up_rot"]', "[[1.0, 30]]")[0])
    assert np.allclose(poses[:, 1, 3], 0.0)
    assert poses[-1, 2, 3] == pytest.approx(1.0)


def test_zero_speed_and_idle_give_identity():
    for segment in (single("w", 0), single("left_rot", 0), single("idle", 0)):
        assert np.array_equal(camera.segment_c2w(segment), np.tile(np.eye(4), (34, 1, 1)))


def test_reversing_a_move_returns_to_the_start():
    chunks = [camera.chunk_poses(s) for s in parse_actions('["w+left_rot", "right_rot", "s"]', "[[0.8, 0], 0, 0.8]")]
    assert np.allclose(camera.world_poses(chunks)[-1], np.eye(4), atol=1e-12)
    turn = [camera.chunk_poses(s) for s in parse_actions('["left_rot", "right_rot"]', "[40, 40]")]
    assert np.allclose(camera.world_poses(turn)[-1], np.eye(4), atol=1e-12)


def test_pose_rows_invert_to_the_relative_c2w():
    poses = camera.segment_c2w(parse_actions('["d+down_rot"]', "[[0.7, 12]]")[0])
    rows = camera.pose_rows(poses)
    assert rows.shape == (34, 19)
    assert list(rows[:4, 0]) == [0, 0, 1, 2]
    w2c = np.tile(np.eye(4), (34, 1, 1))
    w2c[:, :3, :] = rows[:, 7:].reshape(34, 3, 4)
    expected = camera.relative_c2w(np.linalg.inv(w2c)[:33])
    assert torch.allclose(camera.relative_c2w(poses[:33]), expected, atol=1e-6)


def test_plucker_properties():
    height, width = 12, 20
    k = camera.intrinsics_px(height, width)
    cond, uncond = camera.chunk_plucker(camera.chunk_poses(single("left_rot", 30)), height, width)
    assert cond.shape == (33, 6, height, width) and uncond.shape == cond.shape
    assert torch.count_nonzero(cond[:, :3]) == 0  # pure rotation: origin stays at 0, zero moments
    assert torch.allclose(cond[:, 3:].norm(dim=1), torch.ones(33, height, width), atol=1e-6)
    trans, _ = camera.chunk_plucker(camera.chunk_poses(single("w", 1.0)), height, width)
    assert torch.equal(trans[:, 3:], uncond[:, 3:])  # pure translation: directions unchanged
    assert torch.count_nonzero(uncond[:, :3]) == 0
    # the centre column's ray (u + 0.5 == cx) has no x component in camera space
    assert k[2].item() == width / 2
    sub = camera.plucker_embedding(
        torch.eye(4)[None], k, height, width, pixel_rows=torch.tensor([3]), pixel_cols=torch.tensor([5, 7])
    )
    assert torch.equal(sub[0, :, 0], uncond[0, :, 3, [5, 7]])
