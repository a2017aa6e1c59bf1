"""gamecraft.media.video: mp4 writing/reading round trips, container facts, failure hygiene, limits."""

from __future__ import annotations

import re
import struct
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image

from gamecraft.media import video as media


def gradient_clip(frames: int = 33, height: int = 48, width: int = 64, shift: int = 3) -> np.ndarray:
    """[T, H, W, 3] uint8: smooth colour gradients moving ``shift`` px per frame."""
    t = np.arange(frames)[:, None, None]
    y = np.arange(height)[None, :, None]
    x = np.arange(width)[None, None, :]
    red = (x + shift * t) * 200 / (width + shift * frames) + 0 * y
    green = y * 200 / height + 0 * x + 0 * t + 20
    blue = 128 + 60 * np.sin((x + y + shift * t) / 12.0)
    return np.stack([red, green, blue], axis=-1).round().astype(np.uint8)


def ffmpeg_stream_line(path: Path) -> str:
    """The video stream line of ``ffmpeg -i`` (an independent check of the container)."""
    result = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    [line] = [line for line in result.stderr.splitlines() if "Video:" in line]
    return line


def top_level_boxes(path: Path) -> list[str]:
    """Types of the top-level ISO-BMFF boxes in file order."""
    data, boxes, pos = path.read_bytes(), [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if size == 1:  # 64-bit size follows the type
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
        elif size == 0:  # box runs to the end of the file
            size = len(data) - pos
        assert size >= 8, f"corrupt box at {pos}"
        boxes.append(kind.decode("latin-1"))
        pos += size
    return boxes


def mean_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# ----------------------------------------------------------------------------- writing


def test_round_trip_keeps_frames_size_fps_and_pixels(tmp_path: Path) -> None:
    clip = gradient_clip()
    path = media.write_mp4(clip, tmp_path / "clip.mp4", fps=25)
    frames, info = media.read_video_frames(path)
    assert frames.shape == (33, 48, 64, 3) and frames.dtype == np.uint8
    assert (info.width, info.height, info.fps, info.frame_count) == (64, 48, 25.0, 33)
    assert info.duration_s == pytest.approx(33 / 25, abs=0.05)
    assert mean_abs_error(frames, clip) < 2.0  # of 255: chroma subsampling + CRF 18


def test_container_is_h264_yuv420p_bt709_with_faststart(tmp_path: Path) -> None:
    path = media.write_mp4(gradient_clip(frames=10), tmp_path / "clip.mp4", fps=24)
    line = ffmpeg_stream_line(path)
    assert re.search(r"Video: h264 \(High\)", line), line
    assert "yuv420p(tv, bt709, progressive)" in line
    assert re.search(r"\b24 fps\b", line), line
    boxes = top_level_boxes(path)
    assert boxes.index("moov") < boxes.index("mdat"), boxes


def test_odd_size_is_padded_by_replicating_the_edge(tmp_path: Path) -> None:
    clip = gradient_clip(height=33, width=47)
    frames, info = media.read_video_frames(media.write_mp4(clip, tmp_path / "odd.mp4"))
    assert (info.width, info.height) == (48, 34)
    assert mean_abs_error(frames[:, :33, :47], clip) < 2.0
    assert mean_abs_error(frames[:, 33, :47], clip[:, 32]) < 3
    assert mean_abs_error(frames[:, :33, 47], clip[:, :, 46]) < 3


def test_pipeline_layouts_and_torch_tensors_convert_alike() -> None:
    clip = gradient_clip(frames=5, height=8, width=10)
    as_float = torch.from_numpy(clip).float() / 255  # [T, H, W, 3]
    pipeline = as_float.permute(3, 0, 1, 2)[None]  # [1, 3, T, H, W]
    for frames in (clip, as_float, pipeline, pipeline[0], pipeline.to(torch.bfloat16), pipeline.numpy()):
        converted = media.to_uint8_frames(frames)
        assert converted.shape == clip.shape and converted.dtype == np.uint8
        tolerance = 2 if frames.dtype == torch.bfloat16 else 0  # bf16 keeps 8 bits of mantissa
        assert np.abs(converted.astype(int) - clip).max() <= tolerance
    # Slight overshoot is clipped, not rejected.
    assert media.to_uint8_frames(np.full((1, 2, 2, 3), 1.01)).max() == 255


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (np.zeros((2, 8, 8)), "frames must be shaped [T, H, W, 3], [3, T, H, W] or [1, 3, T, H, W]"),
        (np.zeros((0, 8, 8, 3)), "frames must not be empty"),
        (np.full((1, 8, 8, 3), -1.0), "float frames must be in [0, 1]; got values in [-1.000, -1.000]"),
        (np.full((1, 8, 8, 3), np.nan), "float frames contain NaN"),
        (np.zeros((1, 8, 8, 3), np.int16), "integer frames must be uint8; got int16"),
    ],
)
def test_bad_frames_are_rejected(frames: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError) as err:
        media.to_uint8_frames(frames)
    assert str(err.value).startswith(message)


def test_concat_of_arrays_and_files_keeps_every_frame_in_order(tmp_path: Path) -> None:
    dark = np.full((7, 16, 24, 3), 40, np.uint8)
    mid_file = media.write_mp4(np.full((5, 16, 24, 3), 128, np.uint8), tmp_path / "mid.mp4")
    bright = torch.full((1, 3, 9, 16, 24), 220 / 255)
    path = media.concat_mp4([dark, mid_file, bright], tmp_path / "all.mp4", fps=25)
    frames, info = media.read_video_frames(path)
    assert info.frame_count == 7 + 5 + 9
    levels = frames.reshape(len(frames), -1).mean(axis=1).round()
    assert np.allclose(levels, [40] * 7 + [128] * 5 + [220] * 9, atol=2)


def test_save_png_is_lossless(tmp_path: Path) -> None:
    frame = gradient_clip(frames=1, height=9, width=13)[0]
    path = media.save_png(frame, tmp_path / "last.png")
    assert np.array_equal(np.asarray(Image.open(path)), frame)
    chw = torch.from_numpy(frame).permute(2, 0, 1).float() / 255
    assert np.array_equal(np.asarray(Image.open(media.save_png(chw, tmp_path / "chw.png"))), frame)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chw.png", "last.png"]


# ----------------------------------------------------------------------------- failure hygiene


def test_wrong_shape_mid_stream_leaves_no_files(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    with (
        pytest.raises(ValueError, match="frame size 32x32 differs from the video's 24x16"),
        media.VideoWriter(target) as writer,
    ):
        writer.append(np.zeros((4, 16, 24, 3), np.uint8))
        writer.append(np.zeros((4, 32, 32, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_cancellation_keeps_the_previous_file(tmp_path: Path) -> None:
    target = media.write_mp4(np.zeros((3, 16, 16, 3), np.uint8), tmp_path / "out.mp4")
    before = target.read_bytes()

    def chunks():
        yield np.zeros((3, 16, 16, 3), np.uint8)
        raise KeyboardInterrupt  # stands in for Cog's CancelationException (a BaseException)

    with pytest.raises(KeyboardInterrupt):
        media.concat_mp4(chunks(), target)
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]
    assert target.read_bytes() == before


def test_writing_no_frames_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no frames to write to empty.mp4"):
        media.concat_mp4([], tmp_path / "empty.mp4")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- reading


def test_undecodable_file_is_a_value_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"definitely not a video" * 50)
    with pytest.raises(ValueError) as err:
        media.read_video_frames(junk)
    assert str(err.value) == "could not decode junk.mp4: not a readable video file"


def test_too_short_video_for_a_start(tmp_path: Path) -> None:
    path = media.write_mp4(gradient_clip(frames=20), tmp_path / "short.mp4")
    with pytest.raises(ValueError) as err:
        media.last_frames_for_start(path)
    assert str(err.value) == "video has 20 frames; starting from a video needs at least 33"


def test_last_frames_match_a_full_decode(tmp_path: Path) -> None:
    # 130 frames at 25 fps is long enough for the -sseof tail read; the frames must be the same.
    clip = gradient_clip(frames=130, height=16, width=24, shift=1)
    clip[:, :2, :2] = np.arange(130)[:, None, None, None]  # a frame counter in the corner
    path = media.write_mp4(clip, tmp_path / "long.mp4")
    full, full_info = media.read_video_frames(path)
    tail = media.last_frames_for_start(path, count=33)
    assert full_info.frame_count == 130
    assert np.array_equal(tail, full[-33:])
    _, tail_info = media.read_video_frames(path, last=33)
    assert tail_info.frame_count is None  # only the end was decoded

    head, head_info = media.read_video_frames(path, max_frames=10)
    assert np.array_equal(head, full[:10]) and head_info.frame_count is None


def test_probe_reports_container_facts(tmp_path: Path) -> None:
    info = media.probe_video(media.write_mp4(gradient_clip(frames=5), tmp_path / "c.mp4", fps=30))
    facts = (info.width, info.height, info.fps, info.codec, info.pix_fmt)
    assert facts == (64, 48, 30.0, "h264", "yuv420p")


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        ({"max_side": 32}, "c.mp4 is 64x48 pixels; each side must be 1..32"),
        ({"max_duration_s": 0.5}, "c.mp4 is 1.3 s long; the limit is 0.5 s"),
        ({"max_total_frames": 20}, "c.mp4 has more than 20 frames"),
        ({"max_bytes": 64 * 48 * 3 * 10}, "c.mp4: 11 frames of 64x48 exceed 0.1 MiB; read fewer frames"),
    ],
)
def test_read_limits(tmp_path: Path, limit: dict, message: str) -> None:
    path = media.write_mp4(gradient_clip(frames=33), tmp_path / "c.mp4")
    with pytest.raises(ValueError) as err:
        media.read_video_frames(path, **limit)
    assert str(err.value).startswith(message)


def test_missing_file_and_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        media.read_video_frames(tmp_path / "nope.mp4")
    with pytest.raises(ValueError, match="pass max_frames or last, not both"):
        media.read_video_frames(tmp_path / "nope.mp4", max_frames=1, last=1)
    with pytest.raises(ValueError, match=r"fps must be a number in \(0, 1000\]; got 0"):
        media.write_mp4(np.zeros((1, 8, 8, 3), np.uint8), tmp_path / "x.mp4", fps=0)
