"""Custom camera paths: RealEstate10K-style pose text and JSON camera-to-world matrices.

Both formats describe 33 frames per chunk (33·N poses for N chunks). Each chunk is made relative to
its own first pose, as the reference does; the first pose of the next chunk tells where the chunk
ends (``ChunkPoses.advance``; the last chunk ends on its last pose).

RealEstate10K text (what the reference's ``GetPoseEmbedsFromTxt`` reads): an optional first line that
is not numeric (RealEstate10K puts the video URL there), then one row per frame::

    timestamp fx fy cx cy k1 k2 r00 r01 r02 t0 r10 r11 r12 t1 r20 r21 r22 t2

with a **world-to-camera** 3×4 matrix. Intrinsics may be normalized (cx = 0.5) or in pixels of any
frame size: like the reference, only the ratios fx/(2cx) and fy/(2cy) matter.

JSON: a list of 4×4 **camera-to-world** matrices, or an object
``{"c2w": [[4×4], …], "intrinsics": [fx, fy, cx, cy]}`` (normalized, optional; default the
reference's 0.50505, 0.8979, 0.5, 0.5). Translations in both formats are in action units (the
speed units of ``w/a/s/d``); the reference scales them by 10 before computing rays.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from gamecraft.pipeline.actions import MAX_CHUNKS
from gamecraft.pipeline.camera import REFERENCE_INTRINSICS, ChunkPoses
from gamecraft.specs.errors import RequestError
from gamecraft.specs.geometry import FRAMES_PER_CHUNK

MAX_TRAJECTORY_BYTES = 8 * 1024 * 1024
MAX_TRANSLATION = 1.0e4
RIGID_TOLERANCE = 1.0e-3


class TrajectoryError(RequestError):
    """A malformed trajectory file; the message names the line or matrix and the problem."""


def _check_rigid(rotation: np.ndarray, translation: np.ndarray, where: str) -> None:
    if not np.isfinite(rotation).all() or not np.isfinite(translation).all():
        raise TrajectoryError(f"{where}: contains a non-finite number")
    error = float(np.abs(rotation @ rotation.T - np.eye(3)).max())
    if error > RIGID_TOLERANCE or np.linalg.det(rotation) <= 0:
        raise TrajectoryError(
            f"{where}: the 3×3 part is not a rotation (max |R·Rᵀ − I| = {error:.3g}, "
            f"det = {np.linalg.det(rotation):.3g}); poses must be rigid transforms"
        )
    if np.abs(translation).max() > MAX_TRANSLATION:
        raise TrajectoryError(f"{where}: translation {np.abs(translation).max():.3g} exceeds {MAX_TRANSLATION:g} units")


def _check_count(count: int, max_chunks: int) -> int:
    if count == 0:
        raise TrajectoryError("trajectory: no poses found")
    if count % FRAMES_PER_CHUNK:
        raise TrajectoryError(
            f"trajectory: {count} poses; it needs {FRAMES_PER_CHUNK} per chunk "
            f"({FRAMES_PER_CHUNK}, {2 * FRAMES_PER_CHUNK}, {3 * FRAMES_PER_CHUNK}, …)"
        )
    chunks = count // FRAMES_PER_CHUNK
    if chunks > max_chunks:
        raise TrajectoryError(f"trajectory: {chunks} chunks; at most {max_chunks} per request")
    return chunks


def chunks_from_c2w(c2w: np.ndarray, intrinsics: np.ndarray, max_chunks: int = MAX_CHUNKS) -> list[ChunkPoses]:
    """Split absolute poses [33·N, 4, 4] (c2w) with intrinsics [33·N, 4] into relative chunks."""
    chunks = _check_count(c2w.shape[0], max_chunks)
    out = []
    for j in range(chunks):
        lo, hi = j * FRAMES_PER_CHUNK, (j + 1) * FRAMES_PER_CHUNK
        to_chunk = np.linalg.inv(c2w[lo])
        rel = to_chunk[None] @ c2w[lo:hi]
        rel[0] = np.eye(4)
        advance = to_chunk @ c2w[hi] if hi < c2w.shape[0] else rel[-1]
        out.append(ChunkPoses(c2w=rel, intrinsics=intrinsics[lo:hi].copy(), advance=advance))
    return out


def parse_pose_text(text: str, max_chunks: int = MAX_CHUNKS) -> list[ChunkPoses]:
    """Parse RealEstate10K-style rows (see module docstring) into chunks."""
    rows: list[list[float]] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.split()
        try:
            values = [float(v) for v in fields]
        except ValueError:
            if not rows and line_no == 1:
                continue  # RealEstate10K's first line is the source video URL
            raise TrajectoryError(f"trajectory line {line_no}: not a row of numbers: {stripped[:60]!r}") from None
        if len(values) != 19:
            raise TrajectoryError(
                f"trajectory line {line_no}: expected 19 numbers (timestamp fx fy cx cy k1 k2 and a "
                f"3×4 world-to-camera matrix), got {len(values)}"
            )
        row = np.array(values)
        if not np.isfinite(row).all():
            raise TrajectoryError(f"trajectory line {line_no}: contains a non-finite number")
        if (row[1:5] <= 0).any():
            raise TrajectoryError(f"trajectory line {line_no}: intrinsics fx fy cx cy must be positive")
        w2c = row[7:].reshape(3, 4)
        _check_rigid(w2c[:, :3], w2c[:, 3], f"trajectory line {line_no}")
        rows.append(values)
        if len(rows) > max_chunks * FRAMES_PER_CHUNK:
            raise TrajectoryError(f"trajectory: more than {max_chunks} chunks ({max_chunks * FRAMES_PER_CHUNK} poses)")
    _check_count(len(rows), max_chunks)
    table = np.array(rows)
    w2c = np.tile(np.eye(4), (len(rows), 1, 1))
    w2c[:, :3, :] = table[:, 7:].reshape(-1, 3, 4)
    return chunks_from_c2w(np.linalg.inv(w2c), table[:, 1:5], max_chunks)


def parse_c2w_json(data: Any, max_chunks: int = MAX_CHUNKS) -> list[ChunkPoses]:
    """Parse a JSON list of 4×4 c2w matrices (or ``{"c2w": …, "intrinsics": …}``) into chunks."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as err:
            raise TrajectoryError(
                f"trajectory: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})"
            ) from None
    intrinsics = REFERENCE_INTRINSICS
    if isinstance(data, dict):
        unknown = set(data) - {"c2w", "intrinsics"}
        if unknown or "c2w" not in data:
            raise TrajectoryError(
                f'trajectory: a JSON object needs the key "c2w" (and optionally "intrinsics"); got keys {sorted(data)}'
            )
        intrinsics = data.get("intrinsics", REFERENCE_INTRINSICS)
        if (
            not isinstance(intrinsics, list)
            or len(intrinsics) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in intrinsics)
        ):
            raise TrajectoryError("trajectory: intrinsics must be 4 positive numbers [fx, fy, cx, cy] (normalized)")
        data = data["c2w"]
    if not isinstance(data, list):
        raise TrajectoryError("trajectory: expected a JSON list of 4×4 camera-to-world matrices")
    _check_count(len(data), max_chunks)
    matrices = np.zeros((len(data), 4, 4))
    for index, matrix in enumerate(data):
        where = f"trajectory matrix {index}"
        try:
            m = np.array(matrix, dtype=np.float64)
        except (TypeError, ValueError):
            raise TrajectoryError(f"{where}: not a 4×4 list of numbers") from None
        if m.shape != (4, 4):
            raise TrajectoryError(f"{where}: expected shape 4×4, got {'×'.join(map(str, m.shape)) or 'a scalar'}")
        if not np.isfinite(m).all():
            raise TrajectoryError(f"{where}: contains a non-finite number")
        if np.abs(m[3] - [0, 0, 0, 1]).max() > 1e-6:
            raise TrajectoryError(f"{where}: the last row must be [0, 0, 0, 1]")
        _check_rigid(m[:3, :3], m[:3, 3], where)
        matrices[index] = m
    return chunks_from_c2w(matrices, np.tile(np.asarray(intrinsics, dtype=np.float64), (len(data), 1)), max_chunks)


def load_trajectory(path: str | Path, max_chunks: int = MAX_CHUNKS) -> list[ChunkPoses]:
    """Read a trajectory file; JSON if it starts with ``[`` or ``{``, else RealEstate10K text."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_TRAJECTORY_BYTES:
        raise TrajectoryError(f"trajectory: file is {size} bytes; at most {MAX_TRAJECTORY_BYTES} are accepted")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TrajectoryError("trajectory: not a UTF-8 text file") from None
    if text.lstrip()[:1] in ("[", "{"):
        return parse_c2w_json(text, max_chunks)
    return parse_pose_text(text, max_chunks)
