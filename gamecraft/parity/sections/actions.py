"""Parity section ``actions``: action → pose rows → relative c2w → intrinsics → Plücker.

Tensor names come from ``actions.json``; the action and speed are parsed from each key
(``<kind>/<action>_<speed>``), sizes and frame/stride subsets from the key prefix
(``plucker_<H>x<W>[_frames<i>_<j>…|_frame<i>][_stride<s>]``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import torch

from gamecraft.parity import Comparison, compare, load_manifest, load_tensors
from gamecraft.pipeline import camera
from gamecraft.pipeline.actions import single

SECTION = "actions"
_PLUCKER_KEY = re.compile(
    r"^(?P<uncond>uncond_)?plucker_(?P<h>\d+)x(?P<w>\d+)"
    r"(?:_frames(?P<frames>[\d_]+)|_frame(?P<frame>\d+))?(?:_stride(?P<stride>\d+))?(?:/(?P<action>.+))?$"
)


def _segment_from_suffix(suffix: str):
    action, speed = suffix.rsplit("_", 1)
    return single(action, float(speed))


def _plucker_for_key(key: str, match: re.Match) -> torch.Tensor:
    height, width = int(match["h"]), int(match["w"])
    stride = int(match["stride"]) if match["stride"] else 1
    rows = torch.arange(0, height, stride)
    cols = torch.arange(0, width, stride)
    if match["uncond"]:
        poses = camera.chunk_poses(single("idle", 0))
        c2w = torch.eye(4).expand(camera.FRAMES_PER_CHUNK, 4, 4)
    else:
        poses = camera.chunk_poses(_segment_from_suffix(match["action"]))
        c2w = camera.relative_c2w(poses.c2w)
    frames = list(range(camera.FRAMES_PER_CHUNK))
    if match["frames"]:
        frames = [int(f) for f in match["frames"].split("_")]
    elif match["frame"]:
        frames = [int(match["frame"])]
    k = camera.intrinsics_px(height, width, poses.intrinsics)[frames]
    out = camera.plucker_embedding(c2w[frames], k, height, width, pixel_rows=rows, pixel_cols=cols)
    return out[0] if match["frame"] else out


def check(golden_dir: Path) -> Iterator[Comparison]:
    manifest = load_manifest(golden_dir, "actions")
    golden = load_tensors(golden_dir, "actions")
    intrinsics = tuple(manifest["intrinsics_normalized_fx_fy_cx_cy"])
    yield compare(
        SECTION,
        "reference_intrinsics",
        torch.tensor(camera.REFERENCE_INTRINSICS),
        torch.tensor(intrinsics),
        atol=0.0,
        rtol=0.0,
    )
    for key in manifest["tensors"]:
        expected = golden[key]
        kind, _, rest = key.partition("/")
        if kind == "pose_rows":
            segment_poses = camera.segment_c2w(_segment_from_suffix(rest))
            actual = torch.from_numpy(camera.pose_rows(segment_poses, intrinsics))
            yield compare(SECTION, key, actual, expected, atol=1e-12, rtol=1e-9)
        elif kind == "c2w":
            poses = camera.chunk_poses(_segment_from_suffix(rest))
            yield compare(SECTION, key, camera.relative_c2w(poses.c2w), expected)
        elif kind == "intrinsics_px":
            height, width = (int(v) for v in rest.split("x"))
            yield compare(SECTION, key, camera.intrinsics_px(height, width, intrinsics), expected)
        elif (match := _PLUCKER_KEY.match(key)) is not None:
            yield compare(SECTION, key, _plucker_for_key(key, match), expected)
        else:
            yield Comparison(SECTION, key, float("inf"), 0.0, 0.0, False, "unrecognised golden key")
