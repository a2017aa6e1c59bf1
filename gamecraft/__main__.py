"""Command line: ``python -m gamecraft preview …`` (camera-path preview of an action list).

``generate`` (the full video pipeline) is added by the pipeline issue.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from gamecraft.actions import parse_actions
from gamecraft.camera import chunk_poses, world_poses
from gamecraft.preview import save_preview
from gamecraft.trajectory import load_trajectory


def _preview(args: argparse.Namespace) -> int:
    if args.trajectory:
        chunks = load_trajectory(args.trajectory)
        labels = [f"trajectory chunk {i + 1}" for i in range(len(chunks))]
    else:
        segments = parse_actions(args.actions, args.speeds)
        chunks = [chunk_poses(s) for s in segments]
        labels = [s.describe() for s in segments]
    save_preview(args.out, chunks, labels)
    poses = world_poses(chunks)
    for j, label in enumerate(labels):
        p = poses[(j + 1) * 33]
        print(f"chunk {j + 1:>3}  {label:<28} end x={p[0, 3]:+.3f} y={p[1, 3]:+.3f} z={p[2, 3]:+.3f}")
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gamecraft")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("preview", help="render the top-down camera path of an action list to a PNG")
    p.add_argument("--actions", default='["w", "left_rot", "w+left_rot"]', help="JSON list of actions")
    p.add_argument("--speeds", default="[0.5, 30, [0.5, 30]]", help="JSON list of speeds (one entry per action)")
    p.add_argument("--trajectory", type=Path, help="a RealEstate10K text or JSON c2w file instead of actions")
    p.add_argument("--out", type=Path, default=Path("outputs/camera_preview.png"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _preview(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
