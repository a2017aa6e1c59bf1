"""Input images and frames → model pixels ``[1, 3, T, H, W]`` in [−1, 1], as the reference's ``CropResize``.

Reference (sample_batch.py ``CropResize`` + torchvision): ``scale = max(W_t / w, H_t / h)``, bilinear
resize (PIL, antialiased) to ``(int(h·scale), int(w·scale))``, center crop to ``(H_t, W_t)`` (offsets
``round((size − target) / 2)``), ``ToTensor`` then ``Normalize(0.5, 0.5)``.

Differences, all documented in docs/components.md:

* **Q11 fix**: ``int()`` truncation can make the resized side one pixel short of the target (e.g.
  ``704/1080·1080 = 703.99…``), after which the reference's center crop pads a black line. Each side is
  ``max(target, int(side·scale))`` here, so the resized image always covers the target.
* **Extreme aspect ratios**: when the cover-resized image would exceed 4× the target area, PIL
  resamples just the source region that lands in the crop (``Image.resize(box=…)``, same filter
  geometry, ±1/255 from fixed-point rounding) instead of allocating the huge intermediate image.
  Otherwise the steps are exactly the reference's.
* **Modes**: transparency is composited on **white** (transparent pixels' colour is undefined and
  often black); 16-bit greyscale is scaled to 8 bits (not clipped, as Pillow's ``convert`` would);
  CMYK/P/LA/… go through Pillow's conversions; the EXIF orientation is applied.
* **Limits**: decompression bombs, huge (> ``max_pixels``), tiny (< ``min_side``), truncated and
  non-image inputs raise ``ValueError`` naming the problem. No global Pillow setting is changed.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from gamecraft.specs.errors import RequestError
from gamecraft.specs.geometry import DEFAULT_SIZE

logger = logging.getLogger(__name__)

ImageSource = str | Path | bytes | BinaryIO | Image.Image
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "PA")
# Above this many times the target area, the cover-resized intermediate is not materialized.
_MAX_INTERMEDIATE_AREA = 4


@dataclass(frozen=True)
class ImageLimits:
    """Accepted input sizes: at most ``max_pixels`` (width × height) and at least ``min_side`` px per side."""

    max_pixels: int = 50_000_000
    min_side: int = 16


def load_image(source: ImageSource, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """Open and validate an image (path, bytes, binary file or PIL image) → RGB, EXIF orientation applied."""
    if isinstance(source, Image.Image):
        image = source
        _check_size(image.size, limits)
    else:
        if isinstance(source, (bytes, bytearray)):
            source = io.BytesIO(source)
        try:
            image = Image.open(source)  # reads the header only
        except Image.DecompressionBombError as err:
            raise RequestError(f"image refused as a decompression bomb: {err}") from err
        except (UnidentifiedImageError, SyntaxError, EOFError) as err:
            raise RequestError(f"not a readable image: {err}") from err
        _check_size(image.size, limits)  # before decoding any pixel data
        try:
            image.load()
        except (OSError, SyntaxError, EOFError, ValueError) as err:
            raise RequestError(f"image data is truncated or corrupt: {err}") from err
    image = ImageOps.exif_transpose(image)
    return to_rgb(image)


def _check_size(size: tuple[int, int], limits: ImageLimits) -> None:
    width, height = size
    if width * height > limits.max_pixels:
        raise RequestError(
            f"image too large: {width}x{height} = {width * height / 1e6:.1f} MP, limit {limits.max_pixels / 1e6:.1f} MP"
        )
    if min(width, height) < limits.min_side:
        raise RequestError(f"image too small: {width}x{height}, each side must be >= {limits.min_side} px")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode → 8-bit RGB; transparency composited on white, 16-bit scaled to 8 bits."""
    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8), mode="L")
    if image.mode == "La":  # premultiplied; Pillow converts it to RGBA only via LA
        image = image.convert("LA")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def cover_size(size_hw: tuple[int, int], target_hw: tuple[int, int]) -> tuple[int, int]:
    """``(h, w)`` after the reference's cover resize: ``int(side · scale)`` but never below the target (Q11)."""
    (height, width), (target_h, target_w) = size_hw, target_hw
    scale = max(target_w / width, target_h / height)
    return max(target_h, int(height * scale)), max(target_w, int(width * scale))


def resize_and_crop(image: Image.Image, size: tuple[int, int] = DEFAULT_SIZE) -> Image.Image:
    """Cover-resize (bilinear) and center-crop an RGB image to ``size = (H, W)``."""
    target_h, target_w = size
    resized_h, resized_w = cover_size((image.height, image.width), size)
    # torchvision's CenterCrop offsets (Python round: half to even).
    top = int(round((resized_h - target_h) / 2.0))
    left = int(round((resized_w - target_w) / 2.0))
    if resized_h * resized_w <= _MAX_INTERMEDIATE_AREA * target_h * target_w:
        # Exactly the reference: resize the whole image, then crop.
        resized = image.resize((resized_w, resized_h), Image.Resampling.BILINEAR)
        return resized.crop((left, top, left + target_w, top + target_h))
    # Extreme aspect ratio: resample only the source region that lands in the crop (same filter
    # geometry, ±1/255 from Pillow's fixed-point weights) instead of allocating the huge intermediate.
    sx, sy = image.width / resized_w, image.height / resized_h
    box = (left * sx, top * sy, (left + target_w) * sx, (top + target_h) * sy)
    return image.resize((target_w, target_h), Image.Resampling.BILINEAR, box=box)


def _to_unit_range(image: Image.Image) -> torch.Tensor:
    """RGB image → ``[3, H, W]`` float32 in [−1, 1] (ToTensor then Normalize(0.5, 0.5))."""
    pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
    return (pixels.float().div(255) - 0.5) / 0.5


def preprocess_image(
    source: ImageSource, size: tuple[int, int] = DEFAULT_SIZE, limits: ImageLimits = ImageLimits()
) -> torch.Tensor:
    """An image file/bytes/PIL image → ``[1, 3, 1, H, W]`` float32 in [−1, 1] at ``size = (H, W)``."""
    return _to_unit_range(resize_and_crop(load_image(source, limits), size))[None, :, None]


def preprocess_frames(frames: np.ndarray | torch.Tensor, size: tuple[int, int] = DEFAULT_SIZE) -> torch.Tensor:
    """uint8 frames ``[T, H, W, 3]`` → ``[1, 3, T, H_t, W_t]`` float32 in [−1, 1], resized like images."""
    frames = frames.cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames [T, H, W, 3], got {frames.dtype} {frames.shape}")
    if frames.shape[0] == 0:
        raise ValueError("expected at least one frame")
    out = [_to_unit_range(resize_and_crop(Image.fromarray(frame), size)) for frame in frames]
    return torch.stack(out, dim=1)[None]
