"""Image preprocessing: every input mode, EXIF orientation, cover/crop geometry, limits and bad input."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from gamecraft.media.image import (
    ImageLimits,
    cover_size,
    load_image,
    preprocess_frames,
    preprocess_image,
    resize_and_crop,
)
from gamecraft.specs.geometry import DEFAULT_SIZE

SMALL = (32, 48)  # (H, W) target for fast tests


def _png(image: Image.Image, **save_args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **save_args)
    return buffer.getvalue()


def _unit(rgb) -> torch.Tensor:
    """8-bit RGB triple → the model's [−1, 1] values, computed independently."""
    return torch.tensor(rgb, dtype=torch.float32) / 127.5 - 1


def _centre_pixel(pixels: torch.Tensor) -> torch.Tensor:
    return pixels[0, :, 0, pixels.shape[-2] // 2, pixels.shape[-1] // 2]


# -- output contract ---------------------------------------------------------------------------
def test_default_output_shape_range_and_dtype():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    pixels = preprocess_image(image)
    assert pixels.shape == (1, 3, 1, *DEFAULT_SIZE) and pixels.dtype == torch.float32
    assert pixels.min() >= -1 and pixels.max() <= 1
    assert pixels.min() < -0.9 and pixels.max() > 0.9  # the full range is used


def test_solid_colour_maps_exactly():
    pixels = preprocess_image(Image.new("RGB", (100, 80), (255, 0, 128)), SMALL)
    assert torch.equal(pixels[0, :, 0], _unit((255, 0, 128))[:, None, None].expand(3, *SMALL))


@pytest.mark.parametrize("source_kind", ["path", "bytes", "file", "pil"])
def test_accepted_source_types(tmp_path, source_kind):
    image = Image.new("RGB", (64, 40), (10, 200, 30))
    data = _png(image)
    path = tmp_path / "in.png"
    path.write_bytes(data)
    source = {"path": path, "bytes": data, "file": io.BytesIO(data), "pil": image}[source_kind]
    assert torch.equal(_centre_pixel(preprocess_image(source, SMALL)), _unit((10, 200, 30)))


# -- modes -------------------------------------------------------------------------------------
def test_rgba_is_composited_on_white():
    image = Image.new("RGBA", (64, 64), (0, 0, 255, 255))
    image.paste((255, 0, 0, 0), (0, 0, 64, 32))  # top half fully transparent (and "red")
    image.paste((0, 0, 0, 128), (0, 56, 64, 64))  # bottom rows half-transparent black
    pixels = preprocess_image(_png(image), (64, 64))[0, :, 0]
    assert torch.equal(pixels[:, 5, 5], _unit((255, 255, 255)))
    assert torch.equal(pixels[:, 40, 5], _unit((0, 0, 255)))
    assert torch.allclose(pixels[:, 62, 5], _unit((127, 127, 127)), atol=2 / 255)


def test_la_and_palette_with_transparency():
    la = Image.new("LA", (40, 40), (50, 255))
    la.paste((0, 0), (0, 0, 40, 20))
    pixels = preprocess_image(_png(la), (40, 40))[0, :, 0]
    assert torch.equal(pixels[:, 5, 5], _unit((255, 255, 255)))
    assert torch.equal(pixels[:, 30, 5], _unit((50, 50, 50)))

    palette = Image.new("P", (40, 40), 1)
    palette.putpalette([0, 0, 0, 200, 100, 0] + [0] * 762)
    palette.paste(0, (0, 0, 40, 20))
    pixels = preprocess_image(_png(palette, transparency=0), (40, 40))[0, :, 0]
    assert torch.equal(pixels[:, 5, 5], _unit((255, 255, 255)))  # index 0 is transparent
    assert torch.equal(pixels[:, 30, 5], _unit((200, 100, 0)))
    opaque = preprocess_image(_png(palette), (40, 40))[0, :, 0]
    assert torch.equal(opaque[:, 5, 5], _unit((0, 0, 0)))


def test_cmyk():
    buffer = io.BytesIO()
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(buffer, format="TIFF")
    assert torch.equal(_centre_pixel(preprocess_image(buffer.getvalue(), (40, 40))), _unit((255, 0, 0)))


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    values = np.full((40, 40), 65535, dtype=np.uint16)
    values[20:] = 32896  # 128 * 257
    image = Image.fromarray(values)
    assert image.mode.startswith("I")
    pixels = preprocess_image(_png(image), (40, 40))[0, :, 0]
    assert torch.equal(pixels[:, 5, 5], _unit((255, 255, 255)))
    assert torch.equal(pixels[:, 30, 5], _unit((128, 128, 128)))


def test_one_bit_and_greyscale():
    assert torch.equal(_centre_pixel(preprocess_image(_png(Image.new("1", (40, 40), 1)), SMALL)), _unit((255,) * 3))
    assert torch.equal(_centre_pixel(preprocess_image(_png(Image.new("L", (40, 40), 77)), SMALL)), _unit((77,) * 3))


def test_exif_orientation_is_applied():
    # Stored landscape: left half red, right half blue. Orientation 6 = display rotated 90° clockwise,
    # so the displayed image is portrait with red on top and blue at the bottom.
    stored = Image.new("RGB", (80, 40), (255, 0, 0))
    stored.paste((0, 0, 255), (40, 0, 80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    loaded = load_image(_png(stored, exif=exif.tobytes()))
    assert loaded.size == (40, 80)
    assert loaded.getpixel((20, 5)) == (255, 0, 0) and loaded.getpixel((20, 75)) == (0, 0, 255)
    pixels = preprocess_image(_png(stored, exif=exif.tobytes()), (80, 40))[0, :, 0]
    assert torch.equal(pixels[:, 5, 20], _unit((255, 0, 0))) and torch.equal(pixels[:, 75, 20], _unit((0, 0, 255)))


# -- geometry ----------------------------------------------------------------------------------
def _reference_crop_resize(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """The reference's CropResize written out independently (Q11 clamp aside): resize, then crop."""
    th, tw = size
    scale = max(tw / image.width, th / image.height)
    nh, nw = max(th, int(image.height * scale)), max(tw, int(image.width * scale))
    resized = image.resize((nw, nh), Image.BILINEAR)
    top, left = int(round((nh - th) / 2.0)), int(round((nw - tw) / 2.0))
    return np.asarray(resized.crop((left, top, left + tw, top + th)))


@pytest.mark.parametrize("hw", [(1080, 1920), (720, 1280), (1000, 1000), (300, 500), (2000, 900), (704, 1216)])
def test_ordinary_sizes_follow_the_reference_exactly(hw):
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (*hw, 3), dtype=np.uint8))
    assert np.array_equal(np.asarray(resize_and_crop(image, DEFAULT_SIZE)), _reference_crop_resize(image, DEFAULT_SIZE))


def test_extreme_aspect_ratio_crops_the_centre_without_a_huge_intermediate():
    # 4000 x 16 px: the cover resize (x76) would be 304000 x 1216 px; the crop shows source rows
    # 1995.4 .. 2004.6, i.e. the green rows 1998..2002 (output rows ~200..580) between red ones.
    array = np.zeros((4000, 16, 3), dtype=np.uint8)
    array[..., 0] = 255
    array[1998:2003] = (0, 255, 0)
    pixels = preprocess_image(Image.fromarray(array))[0, :, 0]
    assert pixels.shape == (3, *DEFAULT_SIZE)
    assert torch.equal(pixels[:, 352, 608], _unit((0, 255, 0)))
    assert torch.equal(pixels[:, 0, 0], _unit((255, 0, 0))) and torch.equal(pixels[:, 703, 1215], _unit((255, 0, 0)))


@pytest.mark.parametrize("hw", [(16, 4000), (50, 3000), (3000, 60)])
def test_extreme_aspect_ratio_matches_resize_then_crop_within_one_level(hw):
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (*hw, 3), dtype=np.uint8))
    ours = np.asarray(resize_and_crop(image, DEFAULT_SIZE)).astype(int)
    assert np.abs(ours - _reference_crop_resize(image, DEFAULT_SIZE).astype(int)).max() <= 1


def test_truncating_sizes_are_fixed_so_no_black_line_appears():
    # Find a source size where the reference's int() truncation lands one pixel short (quirk Q11).
    th, tw = DEFAULT_SIZE
    short = next((h, w) for h in range(500, 5000) for w in (4000,) if int(h * max(tw / w, th / h)) < th)
    assert cover_size(short, DEFAULT_SIZE)[0] == th
    pixels = preprocess_image(Image.new("RGB", short[::-1], (255, 255, 255)))
    assert torch.equal(pixels, torch.ones_like(pixels))


# -- limits and bad input ----------------------------------------------------------------------
def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` (1-bit) with a tiny data stream: a decompression-bomb shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_refused():
    with pytest.raises(ValueError, match="decompression bomb"):
        preprocess_image(_png_header_only(30000, 30000))


def test_huge_image_is_refused_before_decoding():
    with pytest.raises(ValueError, match="too large"):
        preprocess_image(_png_header_only(9000, 9000))
    with pytest.raises(ValueError, match="too large"):
        preprocess_image(_png(Image.new("RGB", (100, 100))), limits=ImageLimits(max_pixels=5000))


def test_tiny_image_is_refused():
    with pytest.raises(ValueError, match="too small"):
        preprocess_image(_png(Image.new("RGB", (15, 400))))
    with pytest.raises(ValueError, match="too small"):
        preprocess_image(Image.new("RGB", (400, 10)))


def test_truncated_image_is_refused():
    data = _png(Image.fromarray(np.random.default_rng(3).integers(0, 256, (200, 200, 3), dtype=np.uint8)))
    with pytest.raises(ValueError, match="truncated or corrupt"):
        preprocess_image(data[: len(data) // 2])


@pytest.mark.parametrize("data", [b"", b"this is not an image", b"\x89PNG\r\n\x1a\n\x00"])
def test_non_image_bytes_are_refused(data):
    with pytest.raises(ValueError, match="not a readable image|truncated or corrupt"):
        preprocess_image(data)


# -- frames ------------------------------------------------------------------------------------
def test_frames_are_processed_like_images():
    frames = np.random.default_rng(4).integers(0, 256, (3, 60, 90, 3), dtype=np.uint8)
    pixels = preprocess_frames(frames, SMALL)
    assert pixels.shape == (1, 3, 3, *SMALL) and pixels.dtype == torch.float32
    for t in range(3):
        assert torch.equal(pixels[:, :, t : t + 1], preprocess_image(Image.fromarray(frames[t]), SMALL))
    assert torch.equal(preprocess_frames(torch.from_numpy(frames), SMALL), pixels)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 10, 10, 3), dtype=np.float32),
        np.zeros((10, 10, 3), dtype=np.uint8),
        np.zeros((2, 10, 10, 4), dtype=np.uint8),
        np.zeros((0, 10, 10, 3), dtype=np.uint8),
    ],
)
def test_bad_frames_are_refused(bad):
    with pytest.raises(ValueError):
        preprocess_frames(bad, SMALL)
