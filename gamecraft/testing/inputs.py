"""Writers that invert the input parsers, for tests that need valid inputs: action lists as JSON and camera
paths as RealEstate10K text."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from gamecraft.pipeline.actions import Segment
from gamecraft.pipeline.camera import ChunkPoses, world_poses


def to_json_lists(segments: Sequence[Segment]) -> tuple[str, str]:
    """The canonical ``(actions, action_speeds)`` JSON strings for ``segments`` (inverse of the parser)."""
    actions = [s.label for s in segments]
    speeds: list[Any] = []
    for s in segments:
        if not s.motions:
            speeds.append(0)
        elif len(s.motions) == 1:
            speeds.append(s.motions[0].speed)
        else:
            speeds.append([m.speed for m in s.motions])
    return json.dumps(actions), json.dumps(speeds)


def chunks_to_pose_text(chunks: list[ChunkPoses], header: str = "gamecraft camera path") -> str:
    """Write chunks (chained as in :func:`gamecraft.pipeline.camera.world_poses`) as RealEstate10K text.

    Round-trips through :func:`gamecraft.pipeline.trajectory.parse_pose_text`; timestamps are frame indices.
    """
    poses = world_poses(chunks)[:-1]
    intrinsics = np.concatenate([c.intrinsics for c in chunks], axis=0)
    w2c = np.linalg.inv(poses)[:, :3, :].reshape(len(poses), 12)
    lines = [header]
    for index, (k, m) in enumerate(zip(intrinsics, w2c, strict=False)):
        lines.append(" ".join([str(index)] + [repr(float(v)) for v in k] + ["0", "0"] + [repr(float(v)) for v in m]))
    return "\n".join(lines) + "\n"
