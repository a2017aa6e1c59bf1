"""Top-down PNG of a camera path: positions, headings and chunk boundaries.

The view looks down on the x–z plane of the first frame: +x (right) points right in the picture,
+z (forward, where the first frame looks) points up. Each chunk is drawn in its own colour with a
heading arrow at its end and a numbered marker at its boundary; the legend lists every chunk's
action, total yaw/pitch so far and end position. The controller page draws the same picture with the
same conventions (see ``top_down_points``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gamecraft.pipeline.camera import ChunkPoses, world_poses
from gamecraft.specs.geometry import FRAMES_PER_CHUNK

PALETTE = (
    (230, 57, 70),
    (29, 120, 220),
    (46, 160, 67),
    (240, 150, 20),
    (142, 68, 173),
    (0, 150, 150),
    (200, 60, 150),
    (110, 110, 110),
)
BACKGROUND = (250, 250, 247)
GRID = (225, 225, 220)
TEXT = (30, 30, 30)


def chunk_color(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def top_down_points(chunks: Sequence[ChunkPoses]) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(x, z)`` [N·33 + 1, 2] and headings [N·33 + 1] (radians, 0 = +z, positive toward −x).

    Heading is the direction of the camera's forward axis projected on the x–z plane.
    """
    poses = world_poses(list(chunks))
    positions = poses[:, [0, 2], 3]
    forward = poses[:, :3, 2]
    headings = np.arctan2(-forward[:, 0], forward[:, 2])
    return positions, headings


@dataclass(frozen=True)
class PreviewLayout:
    """Mapping from world (x, z) to pixels, and the pixel position of every chunk boundary."""

    origin: tuple[float, float]
    scale: float
    size: tuple[int, int]
    boundaries_px: tuple[tuple[float, float], ...]

    def to_pixel(self, x: float, z: float) -> tuple[float, float]:
        return (self.origin[0] + x * self.scale, self.origin[1] - z * self.scale)


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _arrow(
    draw: ImageDraw.ImageDraw,
    tip_from: tuple[float, float],
    heading: float,
    length: float,
    color: tuple[int, int, int],
    width: int,
) -> None:
    dx, dy = -math.sin(heading), -math.cos(heading)  # picture coordinates: up is −y
    x0, y0 = tip_from
    x1, y1 = x0 + dx * length, y0 + dy * length
    draw.line([(x0, y0), (x1, y1)], fill=color, width=width)
    for side in (+1, -1):
        angle = math.atan2(dy, dx) + math.pi - side * 0.45
        draw.line(
            [(x1, y1), (x1 + math.cos(angle) * length * 0.35, y1 + math.sin(angle) * length * 0.35)],
            fill=color,
            width=width,
        )


def render_preview(
    chunks: Sequence[ChunkPoses],
    labels: Sequence[str],
    size: tuple[int, int] = (960, 720),
    title: str = "Camera path (top view)",
) -> tuple[Image.Image, PreviewLayout]:
    """Render the path; ``labels[i]`` describes chunk ``i`` (e.g. ``"w 0.4 + left_rot 20°"``)."""
    if len(labels) != len(chunks):
        raise ValueError(f"{len(labels)} labels for {len(chunks)} chunks")
    width, height = size
    legend_w = 300
    plot = (20, 50, width - legend_w - 20, height - 30)  # left, top, right, bottom
    positions, headings = top_down_points(chunks)
    poses = world_poses(list(chunks))

    lo, hi = positions.min(axis=0), positions.max(axis=0)
    extent = max(float((hi - lo).max()), 1.0) * 1.25
    centre = (lo + hi) / 2
    scale = min(plot[2] - plot[0], plot[3] - plot[1]) / extent
    origin = ((plot[0] + plot[2]) / 2 - centre[0] * scale, (plot[1] + plot[3]) / 2 + centre[1] * scale)
    boundary_idx = [j * FRAMES_PER_CHUNK for j in range(len(chunks) + 1)]
    boundary_idx[-1] = positions.shape[0] - 1
    layout = PreviewLayout(
        origin,
        scale,
        size,
        tuple((origin[0] + positions[i, 0] * scale, origin[1] - positions[i, 1] * scale) for i in boundary_idx),
    )

    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    step = 10 ** math.floor(math.log10(extent / 4)) if extent > 0 else 1.0
    for axis in range(2):
        first = math.floor((centre[axis] - extent) / step)
        for n in range(first, first + int(2 * extent / step) + 2):
            value = n * step
            if axis == 0:
                x = origin[0] + value * scale
                if plot[0] <= x <= plot[2]:
                    draw.line([(x, plot[1]), (x, plot[3])], fill=GRID)
            else:
                y = origin[1] - value * scale
                if plot[1] <= y <= plot[3]:
                    draw.line([(plot[0], y), (plot[2], y)], fill=GRID)
    draw.rectangle(plot, outline=(190, 190, 185))
    draw.text((plot[0], 12), title, fill=TEXT, font=_font(20))
    draw.text(
        (plot[0], plot[3] + 6), f"grid {step:g} units · +x right, +z (initial view) up", fill=TEXT, font=_font(13)
    )

    arrow_len = max(18.0, min(40.0, 0.06 * (plot[2] - plot[0])))
    for j in range(len(chunks)):
        color = chunk_color(j)
        seg = positions[j * FRAMES_PER_CHUNK : (j + 1) * FRAMES_PER_CHUNK + 1]
        pts = [layout.to_pixel(float(x), float(z)) for x, z in seg]
        if len(pts) > 1:
            draw.line(pts, fill=color, width=4, joint="curve")
        end = min((j + 1) * FRAMES_PER_CHUNK, positions.shape[0] - 1)
        _arrow(draw, layout.to_pixel(*positions[end]), float(headings[end]), arrow_len, color, 3)
    _arrow(draw, layout.boundaries_px[0], float(headings[0]), arrow_len, TEXT, 2)
    for j, (bx, by) in enumerate(layout.boundaries_px):
        color = TEXT if j == 0 else chunk_color(j - 1)
        r = 9
        draw.ellipse([bx - r, by - r, bx + r, by + r], fill=BACKGROUND, outline=color, width=3)
        draw.text((bx, by), "S" if j == 0 else str(j), fill=TEXT, font=_font(11), anchor="mm")

    x0 = width - legend_w
    draw.text((x0, 12), "Chunks (33 frames each)", fill=TEXT, font=_font(16))
    y = 44
    for j, label in enumerate(labels):
        end = (j + 1) * FRAMES_PER_CHUNK
        pose = poses[end]
        yaw = math.degrees(float(headings[end])) + 0.0
        pitch = math.degrees(math.asin(float(np.clip(-pose[1, 2], -1.0, 1.0)))) + 0.0
        draw.rectangle([x0, y + 3, x0 + 12, y + 15], fill=chunk_color(j))
        draw.text((x0 + 18, y), f"{j + 1}. {label}", fill=TEXT, font=_font(14))
        draw.text(
            (x0 + 18, y + 18),
            f"   end x={pose[0, 3] + 0.0:+.2f} z={pose[2, 3] + 0.0:+.2f} "
            f"yaw={round(yaw) + 0:+d}° pitch={round(pitch) + 0:+d}°",
            fill=(90, 90, 90),
            font=_font(12),
        )
        y += 40
        if y > height - 40 and j < len(labels) - 1:
            draw.text((x0, y), f"… {len(labels) - j - 1} more", fill=TEXT, font=_font(13))
            break
    return image, layout


def save_preview(path: str | Path, chunks: Sequence[ChunkPoses], labels: Sequence[str], **kwargs) -> PreviewLayout:
    """Render and write a PNG atomically (temp file + rename); returns the layout."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image, layout = render_preview(chunks, labels, **kwargs)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        image.save(tmp, format="PNG")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return layout
