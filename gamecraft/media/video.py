"""Video and image output: frame conversion, H.264 mp4 writing, PNG (reading: ``video_reader``).

Frames are RGB ``[T, H, W, 3]`` uint8 numpy arrays; writers also take torch tensors and the
pipeline layout (``[1, 3, T, H, W]`` / ``[3, T, H, W]`` float in [0, 1]), see :func:`to_uint8_frames`.
ffmpeg is the static binary bundled with ``imageio-ffmpeg`` (no system package). Choices:

* H.264 (libx264) yuv420p, CRF 18 (visually lossless on the model's smooth output), preset
  ``fast`` (about 2x faster than ``medium`` for a few percent more bytes; encoding runs inside
  the prediction's time budget), ``+faststart`` (``moov`` first: playback starts while loading).
* RGB->YUV with the BT.709 matrix, stream tagged BT.709: browsers show untagged HD video as
  BT.709, but ffmpeg converts with BT.601 by default, which shifts colours.
* 4:2:0 needs even sizes: odd sizes are padded by one replicated row/column at the bottom/right,
  so no generated pixel is lost (cropping would drop one).
* Output goes to a temporary file beside ``path`` and is renamed into place: an error or a
  cancellation (any ``BaseException``) never leaves a partial file at ``path``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import numbers
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import imageio_ffmpeg
import numpy as np

# Reading lives in video_reader; re-exported so callers have one media API.
from gamecraft.media.video_reader import (  # noqa: F401
    START_FRAMES,
    VideoInfo,
    _open_video,
    last_frames_for_start,
    probe_video,
    read_video_frames,
)
from gamecraft.specs.geometry import FPS

logger = logging.getLogger(__name__)

DEFAULT_FPS = FPS
DEFAULT_CRF = 18
DEFAULT_PRESET = "fast"
_FFMPEG_CLOSE_TIMEOUT_S = 300.0

_COLOR_FILTER = (
    "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p,"
    "setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv"
)


PathLike = str | os.PathLike


# ----------------------------------------------------------------------------- conversion


def _is_torch_tensor(x: Any) -> bool:
    # Checked without importing torch: this module must stay cheap to import.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _thwc_permutation(shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """Return (shape without a leading batch axis, axis order to reach [T, H, W, 3])."""
    perm: tuple[int, ...] | None = (1, 2, 3, 0)
    if len(shape) == 5 and shape[0] == 1 and shape[1] == 3:
        shape = shape[1:]
    elif len(shape) == 4 and shape[-1] == 3:
        perm = None
    elif not (len(shape) == 4 and shape[0] == 3):
        raise ValueError(f"frames must be shaped [T, H, W, 3], [3, T, H, W] or [1, 3, T, H, W]; got {list(shape)}")
    thwc = shape if perm is None else tuple(shape[i] for i in perm)
    if min(thwc[:3]) < 1:
        raise ValueError(f"frames must not be empty; got [T, H, W, 3] = {list(thwc)}")
    return shape, perm


def _check_float_range(lo: float, hi: float) -> None:
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError("float frames contain NaN")
    # Small overshoot (an unclamped VAE decode) is clipped; a [-1, 1] tensor is a bug.
    if lo < -0.25 or hi > 1.25:
        raise ValueError(
            f"float frames must be in [0, 1]; got values in [{lo:.3f}, {hi:.3f}] "
            "(a [-1, 1] tensor needs (x + 1) / 2 first)"
        )


def to_uint8_frames(frames: Any) -> np.ndarray:
    """Convert frames to a C-contiguous numpy array ``[T, H, W, 3]`` uint8.

    Accepts a numpy array or torch tensor (any device) shaped ``[T, H, W, 3]``,
    ``[3, T, H, W]`` or ``[1, 3, T, H, W]`` (a last axis of 3 wins when ambiguous), either
    uint8 or float in [0, 1] (rounded; overshoot up to 0.25 is clipped). Torch tensors are
    converted on their own device first, so only uint8 data crosses to the CPU.
    """
    x = frames.detach() if _is_torch_tensor(frames) else np.asarray(frames)
    shape, perm = _thwc_permutation(tuple(x.shape))
    x = x.reshape(shape)
    if not isinstance(x, np.ndarray):  # torch: quantize and permute on the tensor's device
        if x.is_floating_point():
            x = x.float()
            _check_float_range(float(x.min()), float(x.max()))
            from gamecraft.pipeline.frames import quantize_frames  # torch is loaded already: x is a tensor

            x = quantize_frames(x)
        x, perm = (x.permute(*perm) if perm else x).contiguous().cpu().numpy(), None
    if np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32, copy=False)
        _check_float_range(float(x.min()), float(x.max()))
        x = np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif x.dtype != np.uint8:
        raise ValueError(f"integer frames must be uint8; got {x.dtype}")
    return np.ascontiguousarray(x.transpose(perm) if perm else x)


def _pad_to_even(frames: np.ndarray) -> np.ndarray:
    """Pad ``[T, H, W, 3]`` by one replicated row/column where H or W is odd."""
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if not (pad_h or pad_w):
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


# ----------------------------------------------------------------------------- writing


def _temp_sibling(path: Path, suffix: str) -> Path:
    """A unique hidden name next to ``path``: same filesystem, so the final rename is atomic.
    (Not mkstemp: that creates the file 0600, and outputs should get the usual umask.)"""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{suffix}")


def _fps_arg(fps: float | Fraction) -> str:
    if not (isinstance(fps, numbers.Real) and 0 < fps <= 1000 and math.isfinite(fps)):
        raise ValueError(f"fps must be a number in (0, 1000]; got {fps!r}")
    return str(Fraction(fps).limit_denominator(1001))


def _stderr_tail(stream: BinaryIO) -> str:
    stream.seek(0)
    return stream.read().decode("utf-8", "replace").strip()[-2000:]


class VideoWriter:
    """Incremental H.264 mp4 writer: one ffmpeg process fed chunk by chunk.

    Use as a context manager; frames appended so far are finalized on a clean exit, and on
    an exception ffmpeg is killed and nothing is written to ``path``. The frame size is fixed
    by the first chunk (after padding to even sizes). Memory stays at one chunk, so a long
    session can stream every generated chunk into one file without keeping frames around.
    """

    def __init__(
        self, path: PathLike, fps: float | Fraction = DEFAULT_FPS, crf: int = DEFAULT_CRF,
        preset: str = DEFAULT_PRESET, close_timeout_s: float = _FFMPEG_CLOSE_TIMEOUT_S,
    ) -> None:  # fmt: skip
        if not 0 <= crf <= 51:
            raise ValueError(f"crf must be in [0, 51]; got {crf}")
        self.path = Path(path)
        self.fps = fps
        self._fps_arg = _fps_arg(fps)
        self._crf, self._preset, self._close_timeout_s = crf, preset, close_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: BinaryIO | None = None
        self._tmp: Path | None = None
        self.size: tuple[int, int] | None = None  # (height, width) of the encoded frames
        self.frames_written = 0
        self._closed = False

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _start(self, height: int, width: int) -> None:
        self._tmp = _temp_sibling(self.path, ".tmp.mp4")
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - ffmpeg's stderr, closed in close()
        cmd = [
            imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
            "-framerate", self._fps_arg, "-i", "pipe:0", "-an",
            "-vf", _COLOR_FILTER, "-c:v", "libx264", "-preset", self._preset,
            "-crf", str(self._crf), "-pix_fmt", "yuv420p",
            "-movflags", "+faststart", "-f", "mp4", str(self._tmp),
        ]  # fmt: skip
        logger.debug("starting ffmpeg: %s", " ".join(cmd))
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr)
        self.size = (height, width)

    def append(self, frames: Any) -> None:
        """Encode a chunk of frames (any layout :func:`to_uint8_frames` accepts)."""
        if self._closed:
            raise RuntimeError(f"VideoWriter for {self.path.name} is already closed")
        batch = _pad_to_even(to_uint8_frames(frames))
        height, width = batch.shape[1:3]
        if self._proc is None:
            self._start(height, width)
        elif (height, width) != self.size:
            raise ValueError(
                f"frame size {width}x{height} differs from the video's "
                f"{self.size[1]}x{self.size[0]}; all chunks of a video must have one size"
            )
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(batch.data)
        except OSError as err:  # BrokenPipeError: ffmpeg exited; its stderr says why
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)
            raise RuntimeError(f"ffmpeg stopped while encoding {self.path.name}: {_stderr_tail(self._stderr)}") from err
        self.frames_written += batch.shape[0]

    def close(self) -> Path:
        """Finish encoding and move the file into place; returns ``path``."""
        if self._closed:
            return self.path
        if self._proc is None:
            self.abort()
            raise ValueError(f"no frames to write to {self.path.name}")
        try:
            assert self._proc.stdin is not None and self._stderr is not None
            self._proc.stdin.close()
            try:
                returncode = self._proc.wait(timeout=self._close_timeout_s)
            except subprocess.TimeoutExpired:
                raise RuntimeError(
                    f"ffmpeg did not finish {self.path.name} within {self._close_timeout_s:.0f} s"
                ) from None
            if returncode != 0:
                raise RuntimeError(
                    f"ffmpeg failed (exit {returncode}) writing {self.path.name}: {_stderr_tail(self._stderr)}"
                )
            assert self._tmp is not None
            os.replace(self._tmp, self.path)
            self._tmp = None
        finally:
            self.abort()  # after a successful rename this only releases resources
        logger.info(
            "wrote %s: %d frames of %s, %s fps, %.2f MB", self.path, self.frames_written,
            "x".join(map(str, self.size[::-1])), self._fps_arg, self.path.stat().st_size / 1e6,
        )  # fmt: skip
        return self.path

    def abort(self) -> None:
        """Stop ffmpeg and delete the temporary file; ``path`` is left untouched."""
        self._closed = True
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            with contextlib.suppress(OSError, ValueError):
                if self._proc.stdin is not None:
                    self._proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None


def write_mp4(
    frames: Any, path: PathLike, fps: float | Fraction = DEFAULT_FPS, crf: int = DEFAULT_CRF,
    preset: str = DEFAULT_PRESET,
) -> Path:  # fmt: skip
    """Write frames (see :func:`to_uint8_frames`) as an H.264 mp4 at ``fps``; returns ``path``."""
    with VideoWriter(path, fps=fps, crf=crf, preset=preset) as writer:
        writer.append(frames)
    return Path(path)


def concat_mp4(
    chunks: Iterable[Any], path: PathLike, fps: float | Fraction = DEFAULT_FPS,
    crf: int = DEFAULT_CRF, preset: str = DEFAULT_PRESET,
) -> Path:  # fmt: skip
    """Write the concatenation of ``chunks`` as one mp4; returns ``path``.

    Each chunk is a frame array/tensor or the path of a video (decoded while streaming, a
    few frames at a time). Everything is re-encoded through one :class:`VideoWriter`: robust
    to chunks with different encoder settings or timestamps, unlike stream-copy
    concatenation, at the cost of one encode. All chunks must have one (even-padded) size.
    """
    with VideoWriter(path, fps=fps, crf=crf, preset=preset) as writer:
        for chunk in chunks:
            if not isinstance(chunk, (str, os.PathLike)):
                writer.append(chunk)
                continue
            with _open_video(Path(chunk)) as (_, frame_iter):
                while batch := list(itertools.islice(frame_iter, 16)):
                    writer.append(np.stack(batch))
    return Path(path)


def save_png(frame: Any, path: PathLike) -> Path:
    """Save one frame, ``[H, W, 3]`` or ``[3, H, W]`` (uint8 or float in [0, 1]), as PNG."""
    from PIL import Image

    shape = tuple(frame.shape)
    if len(shape) == 3 and shape[-1] == 3:
        batch = frame[None]
    elif len(shape) == 3 and shape[0] == 3:
        batch = frame[:, None]  # [3, 1, H, W]
    else:
        raise ValueError(f"a frame must be shaped [H, W, 3] or [3, H, W]; got {list(shape)}")
    image = Image.fromarray(to_uint8_frames(batch)[0], mode="RGB")
    path = Path(path)
    tmp = _temp_sibling(path, ".tmp.png")
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
