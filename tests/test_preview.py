"""The camera-path preview PNG for a mixed action list."""

from __future__ import annotations

import numpy as np
from PIL import Image

from gamecraft.media.preview import chunk_color, save_preview, top_down_points
from gamecraft.pipeline import camera
from gamecraft.pipeline.actions import parse_actions


def test_preview_png_for_mixed_actions(tmp_path):
    segments = parse_actions('["w", "left_rot", "w+left_rot", "d", "down_rot"]', "[1.0, 90, [1.0, 45], 0.5, 10]")
    chunks = [camera.chunk_poses(s) for s in segments]
    out = tmp_path / "sub" / "preview.png"
    layout = save_preview(out, chunks, [s.describe() for s in segments], size=(800, 600))
    image = Image.open(out)
    assert image.format == "PNG" and image.size == (800, 600)
    assert list(tmp_path.joinpath("sub").iterdir()) == [out]  # no temp file left behind

    start, after_w, after_turn, after_arc, after_d, end = layout.boundaries_px
    # w moves straight up the picture (+z), a pure turn stays in place
    assert abs(after_w[0] - start[0]) < 1 and after_w[1] < start[1] - 50
    assert np.allclose(after_turn, after_w)
    # after turning left 90° the camera faces −x: the arc goes further left; it ends facing 135° left,
    # so its right-hand side (d) points toward −x and +z: left and up in the picture by the same amount
    assert after_arc[0] < after_turn[0] - 20
    dx, dy = after_d[0] - after_arc[0], after_d[1] - after_arc[1]
    assert dx < -20 and dy < -20 and abs(dx - dy) < 1
    assert np.allclose(end, after_d)

    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    colours = {tuple(p) for p in pixels[::7]}
    for j in (0, 2, 3):  # chunks that move draw a line in their colour
        assert chunk_color(j) in colours
    midpoint = (int((start[0] + after_w[0]) / 2), int((start[1] + after_w[1]) / 2))
    assert image.convert("RGB").getpixel(midpoint) == chunk_color(0)


def test_top_down_headings():
    chunks = [camera.chunk_poses(s) for s in parse_actions('["left_rot", "right_rot"]', "[90, 45]")]
    positions, headings = top_down_points(chunks)
    assert np.allclose(positions, 0)
    assert np.degrees(headings[33]) == pytest_approx(90 * 33 / 33)
    assert np.degrees(headings[-1]) == pytest_approx(45)


def pytest_approx(value):
    import pytest

    return pytest.approx(value, abs=1e-6)
