"""Camera math: segments → per-frame camera poses → Plücker embeddings (the reference's numerics).

Conventions (OpenCV camera, as the reference): x right, y down, z forward. Poses are 4×4
camera-to-world matrices (``c2w``) unless a name says ``w2c``. Within a chunk every pose is relative
to the chunk's first frame (identity), as the reference does.

Units:
* translations of a :class:`~gamecraft.pipeline.actions.Segment` are "action units" (the speed list's units);
  the reference multiplies translations by ``TRANSLATION_SCALE`` = 10 before computing rays;
* angles are degrees; yaw is positive to the left (``left_rot``), pitch positive upwards (``up_rot``);
* intrinsics are normalized ``(fx, fy, cx, cy)`` (fractions of width/height) or pixels where a name
  says ``_px``.

The reference (``ActionToPoseFromID`` → ``GetPoseEmbedsFromPoses``) builds 34 pose rows per chunk —
row 0 the identity, row k the motion after k/33 of the speed — and uses rows 0..32 only (quirk Q5:
each chunk reaches 32/33 of its nominal value). We keep that for parity; the 34th pose is where the
next chunk starts (``ChunkPoses.advance``) and is used for previews.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from gamecraft.pipeline.actions import Segment
from gamecraft.specs.geometry import FRAMES_PER_CHUNK

REFERENCE_INTRINSICS = (0.50505, 0.8979, 0.5, 0.5)
TRANSLATION_SCALE = 10.0


def yaw_matrix(degrees: float) -> np.ndarray:
    """[3, 3] c2w rotation about the camera's y axis; positive turns the view toward −x (left)."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])


def pitch_matrix(degrees: float) -> np.ndarray:
    """[3, 3] c2w rotation about the camera's x axis; positive tilts the view toward −y (up)."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def view_rotation(yaw_degrees: float, pitch_degrees: float) -> np.ndarray:
    """[3, 3] c2w rotation: yaw about the (chunk-start) up axis, then pitch about the camera's x axis."""
    return yaw_matrix(yaw_degrees) @ pitch_matrix(pitch_degrees)


@dataclass(frozen=True)
class ChunkPoses:
    """The camera path of one chunk, relative to the chunk's first frame.

    ``c2w``: [33, 4, 4] float64, translation in action units (frame 0 = identity).
    ``intrinsics``: [33, 4] normalized (fx, fy, cx, cy).
    ``advance``: [4, 4] float64, the pose (relative to frame 0) where the next chunk starts.
    """

    c2w: np.ndarray
    intrinsics: np.ndarray
    advance: np.ndarray


def segment_c2w(segment: Segment, frames: int = FRAMES_PER_CHUNK) -> np.ndarray:
    """Poses after k/frames of the segment's motion, k = 0..frames: [frames + 1, 4, 4] float64.

    Rotation after k steps is ``view_rotation(k/frames · yaw, k/frames · pitch)``. Translation is
    walked frame by frame in the direction of the current heading (yaw only, like a game character:
    looking up while walking forward does not fly), using the heading at the middle of each step; a
    pure translation is a straight line and a pure rotation stays in place, exactly as the reference.
    """
    step_move = np.array([segment.strafe, 0.0, segment.forward]) / frames
    poses = np.tile(np.eye(4), (frames + 1, 1, 1))
    position = np.zeros(3)
    for k in range(1, frames + 1):
        if step_move.any():
            position = position + yaw_matrix(segment.yaw_degrees * (k - 0.5) / frames) @ step_move
        poses[k, :3, :3] = view_rotation(segment.yaw_degrees * k / frames, segment.pitch_degrees * k / frames)
        poses[k, :3, 3] = position
    return poses


def chunk_poses(segment: Segment) -> ChunkPoses:
    """:class:`ChunkPoses` of an action segment (reference intrinsics for every frame)."""
    poses = segment_c2w(segment, FRAMES_PER_CHUNK)
    intrinsics = np.tile(np.array(REFERENCE_INTRINSICS), (FRAMES_PER_CHUNK, 1))
    return ChunkPoses(c2w=poses[:FRAMES_PER_CHUNK], intrinsics=intrinsics, advance=poses[FRAMES_PER_CHUNK])


def pose_rows(c2w: np.ndarray, intrinsics=REFERENCE_INTRINSICS) -> np.ndarray:
    """RealEstate10K-style text rows, as the reference writes them: [N, 19] float64.

    Row = ``[index, fx, fy, cx, cy, 0, 0, w2c 3×4 row-major]`` with ``w2c = inv(c2w)``. The index
    column copies the reference's counter: rows 0 and 1 both read 0, row k reads k − 1.
    """
    n = c2w.shape[0]
    rows = np.zeros((n, 19))
    rows[:, 0] = np.maximum(np.arange(n) - 1, 0)
    rows[:, 1:5] = np.broadcast_to(np.asarray(intrinsics, dtype=np.float64), (n, 4))
    rows[:, 7:] = np.linalg.inv(c2w)[:, :3, :].reshape(n, 12)
    return rows


def relative_c2w(c2w: np.ndarray) -> torch.Tensor:
    """The c2w matrices the reference feeds to the ray computation: [F, 4, 4] float32.

    ``c2w_rel[k] = inv(c2w[0]) · c2w[k]`` (frame 0 exactly the identity), then every translation is
    multiplied by ``TRANSLATION_SCALE`` (the reference's ``get_relative_pose``).
    """
    first_w2c = np.linalg.inv(c2w[0])
    rel = np.concatenate([np.eye(4)[None], first_w2c[None] @ c2w[1:]], axis=0)
    rel[:, :3, 3] *= TRANSLATION_SCALE
    return torch.from_numpy(rel.astype(np.float32))


def intrinsics_px(height: int, width: int, intrinsics=REFERENCE_INTRINSICS) -> torch.Tensor:
    """Pixel intrinsics [..., 4] float32 for an H×W frame from normalized ones.

    As the reference: ``fx·W/(2cx), fy·H/(2cy), cx·W/(2cx), cy·H/(2cy)`` — i.e. the principal point
    is always the frame centre and focal lengths scale with it.
    """
    k = np.asarray(intrinsics, dtype=np.float64)
    ratio_w, ratio_h = width / (k[..., 2] * 2), height / (k[..., 3] * 2)
    px = np.stack([k[..., 0] * ratio_w, k[..., 1] * ratio_h, k[..., 2] * ratio_w, k[..., 3] * ratio_h], axis=-1)
    return torch.from_numpy(px.astype(np.float32))


def plucker_embedding(
    c2w: torch.Tensor,
    intrinsics: torch.Tensor,
    height: int,
    width: int,
    pixel_rows: torch.Tensor | None = None,
    pixel_cols: torch.Tensor | None = None,
) -> torch.Tensor:
    """Plücker ray embedding ``[o × d, d]`` per pixel: [F, 6, h, w] float32.

    ``c2w``: [F, 4, 4] float32 (translations already scaled); ``intrinsics``: [F, 4] or [4] pixel
    ``fx, fy, cx, cy``. Pixel centres are ``(u + 0.5, v + 0.5)``; directions are normalized in camera
    space, then rotated by the c2w rotation; ``o`` is the c2w translation. ``pixel_rows`` /
    ``pixel_cols`` select a sub-grid (default: all H rows and W columns), e.g. to check a stride-32
    subsample of a 704×1216 embedding without building the full 680 MB tensor. The operation order
    follows the reference so that float32 results agree to rounding.
    """
    c2w = c2w.to(torch.float32)
    frames = c2w.shape[0]
    device = c2w.device  # computed where the poses are (the GPU in production)
    rows = torch.arange(height) if pixel_rows is None else pixel_rows
    cols = torch.arange(width) if pixel_cols is None else pixel_cols
    rows, cols = rows.to(device, torch.float32), cols.to(device, torch.float32)
    j, i = torch.meshgrid(rows, cols, indexing="ij")
    i = i.reshape(1, -1) + 0.5  # [1, h·w] pixel x
    j = j.reshape(1, -1) + 0.5  # [1, h·w] pixel y
    k = intrinsics.to(device, torch.float32).reshape(-1, 4).expand(frames, 4)
    fx, fy, cx, cy = (k[:, n : n + 1] for n in range(4))  # [F, 1] each
    xs = (i - cx) / fx
    ys = (j - cy) / fy
    zs = torch.ones_like(xs)
    directions = torch.stack((xs, ys, zs), dim=-1)  # [F, h·w, 3]
    directions = directions / directions.norm(dim=-1, keepdim=True)
    rays_d = directions @ c2w[:, :3, :3].transpose(-1, -2)
    rays_o = c2w[:, None, :3, 3].expand_as(rays_d)
    moment = torch.linalg.cross(rays_o, rays_d, dim=-1)
    plucker = torch.cat([moment, rays_d], dim=-1)  # [F, h·w, 6]
    return plucker.reshape(frames, rows.numel(), cols.numel(), 6).permute(0, 3, 1, 2).contiguous()


def chunk_plucker(
    poses: ChunkPoses, height: int, width: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Conditional and unconditional Plücker embeddings of one chunk: two [33, 6, H, W] float32.

    The unconditional embedding uses identity poses (zero moments) with the same intrinsics; the
    reference feeds it to the CFG's unconditional row. ``device``: where to compute them (at
    704×1216 each is 680 MB: on the GPU that takes milliseconds and nothing crosses the bus).
    """
    k = intrinsics_px(height, width, poses.intrinsics).to(device)
    cond = plucker_embedding(relative_c2w(poses.c2w).to(device), k, height, width)
    uncond = plucker_embedding(torch.eye(4, device=device).expand(poses.c2w.shape[0], 4, 4), k, height, width)
    return cond, uncond


def world_poses(chunks: list[ChunkPoses]) -> np.ndarray:
    """Chain chunks into one path in the first chunk's frame: [N·33 + 1, 4, 4] float64.

    Chunk ``j+1`` starts at chunk ``j``'s ``advance`` pose; the last row is the final pose.
    Translations in action units. Used for previews and the cumulative pose in saved state.
    """
    start = np.eye(4)
    out = []
    for chunk in chunks:
        out.append(start[None] @ chunk.c2w)
        start = start @ chunk.advance
    out.append(start[None])
    return np.concatenate(out, axis=0)
