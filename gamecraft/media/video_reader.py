"""Reading user videos (start from a video): probe, decode, keep only the frames needed, with limits.

Frames come out as RGB ``[T, H, W, 3]`` uint8 arrays, decoded by the ffmpeg binary bundled with
``imageio-ffmpeg``. Absurd inputs (huge frames, hours of video, undecodable bytes) are refused with a
``ValueError`` that names the problem instead of running out of memory or time.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from gamecraft.specs.errors import RequestError

logger = logging.getLogger(__name__)

# Frames a continuation from a video needs (one GameCraft chunk of history).
START_FRAMES = 33

# Limits for videos we read (user uploads).
MAX_SIDE = 8192
MAX_DURATION_S = 1800.0
MAX_FRAMES = 108_000  # 30 min at 60 fps; bounds decoding when the duration is unknown
MAX_BYTES = 4 << 30  # decoded frames kept in memory by one read

# ffmpeg's -sseof reads only the tail; this margin (seconds) absorbs timestamp rounding.
_TAIL_MARGIN_S = 2.0

# Decoding: every decoded frame exactly once (no frame-rate conversion), and exact chroma
# upsampling, which halves the round-trip error of the default YUV->RGB conversion.
_READ_PARAMS = ["-fps_mode", "passthrough", "-sws_flags", "bicubic+accurate_rnd+full_chroma_int"]

PathLike = str | os.PathLike

# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class VideoInfo:
    """Container facts about a video. ``fps``/``duration_s`` are 0.0 when unknown;
    ``frame_count`` is set only when the whole file was decoded."""

    width: int
    height: int
    fps: float
    duration_s: float
    codec: str
    pix_fmt: str
    frame_count: int | None = None


@contextlib.contextmanager
def _open_video(
    path: Path, input_params: list[str] | None = None, max_side: int = MAX_SIDE,
    max_duration_s: float = MAX_DURATION_S,
) -> Iterator[tuple[VideoInfo, Iterator[np.ndarray]]]:  # fmt: skip
    """Open a video with ffmpeg; yields its info and an iterator of read-only [H, W, 3] frames."""
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    gen = imageio_ffmpeg.read_frames(str(path), input_params=input_params, output_params=_READ_PARAMS)
    try:
        try:
            meta = next(gen)
            width, height = (int(v) for v in meta["size"])
        except (OSError, RuntimeError, IndexError, KeyError, ValueError, StopIteration):
            raise RequestError(f"could not decode {path.name}: not a readable video file") from None
        info = VideoInfo(
            width=width, height=height, fps=float(meta.get("fps") or 0.0),
            duration_s=float(meta.get("duration") or 0.0), codec=str(meta.get("codec", "")),
            pix_fmt=str(meta.get("pix_fmt", "")).split("(")[0],
        )  # fmt: skip
        if not (0 < width <= max_side and 0 < height <= max_side):
            raise RequestError(f"{path.name} is {width}x{height} pixels; each side must be 1..{max_side}")
        if info.duration_s > max_duration_s:
            raise RequestError(f"{path.name} is {info.duration_s:.1f} s long; the limit is {max_duration_s:g} s")

        def frames() -> Iterator[np.ndarray]:
            try:
                for raw in gen:
                    yield np.frombuffer(raw, np.uint8).reshape(height, width, 3)
            except RuntimeError as err:  # a truncated frame or a decoder failure mid-file
                raise RequestError(f"could not decode {path.name}: {err}".split("\n")[0]) from None

        yield info, frames()
    finally:
        gen.close()


def probe_video(path: PathLike) -> VideoInfo:
    """Read a video's container info (size, fps, duration, codec, pix_fmt) without decoding."""
    with _open_video(Path(path), max_side=sys.maxsize, max_duration_s=math.inf) as (info, _):
        return info


def read_video_frames(
    path: PathLike, max_frames: int | None = None, last: int | None = None, *,
    max_side: int = MAX_SIDE, max_duration_s: float = MAX_DURATION_S,
    max_total_frames: int = MAX_FRAMES, max_bytes: int = MAX_BYTES,
) -> tuple[np.ndarray, VideoInfo]:  # fmt: skip
    """Decode a video to ``[T, H, W, 3]`` uint8 RGB frames plus its :class:`VideoInfo`.

    ``max_frames`` keeps the first N frames (decoding stops there); ``last`` keeps only the
    final N, streaming through a bounded deque. With ``last``, a long video is first read
    from ``last / fps + 2`` seconds before its end (ffmpeg ``-sseof``, frame-accurate), so a
    10-minute 4K upload costs a few seconds, not a full decode; ``frame_count`` is then None.
    Raises ValueError for undecodable files, videos without frames and the limits above.
    """
    if max_frames is not None and last is not None:
        raise ValueError("pass max_frames or last, not both")
    for name, value in (("max_frames", max_frames), ("last", last)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1; got {value}")
    path = Path(path)
    limits = {"max_side": max_side, "max_duration_s": max_duration_s}

    if last is not None:
        info = probe_video(path)
        tail_s = last / info.fps + _TAIL_MARGIN_S if info.fps > 0 else math.inf
        if info.duration_s > tail_s:
            with _open_video(path, ["-sseof", f"-{tail_s:.3f}"], **limits) as (info, it):
                tail = deque(it, maxlen=last)
            if len(tail) == last:  # else the container's duration lied: decode everything
                return np.stack(tail), info

    kept: deque[np.ndarray] | list[np.ndarray] = deque(maxlen=last) if last else []
    decoded = 0
    with _open_video(path, **limits) as (info, frame_iter):
        frame_bytes = info.width * info.height * 3
        for frame in frame_iter:
            decoded += 1
            if decoded > max_total_frames:
                raise RequestError(f"{path.name} has more than {max_total_frames} frames")
            kept.append(frame)
            if len(kept) * frame_bytes > max_bytes:
                raise RequestError(
                    f"{path.name}: {len(kept)} frames of {info.width}x{info.height} exceed "
                    f"{max_bytes / 2**20:.1f} MiB; read fewer frames (max_frames or last)"
                )
            if max_frames is not None and decoded == max_frames:
                break
        else:
            info = replace(info, frame_count=decoded)
    if not kept:
        raise RequestError(f"{path.name} contains no video frames")
    return np.stack(kept), info


def last_frames_for_start(path: PathLike, count: int = START_FRAMES) -> np.ndarray:
    """The last ``count`` frames ``[count, H, W, 3]`` uint8 of a video, to continue from it."""
    frames, _ = read_video_frames(path, last=count)
    if len(frames) < count:
        have = f"{len(frames)} frame" + ("" if len(frames) == 1 else "s")
        raise RequestError(f"video has {have}; starting from a video needs at least {count}")
    return frames
