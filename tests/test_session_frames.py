"""Decoded frames reach the host as uint8 quantised on their device, byte-identical to the writers'
own conversion of the float frames."""

import numpy as np
import pytest
import torch

from gamecraft.media.video import to_uint8_frames
from gamecraft.pipeline.session import frames_to_host


def decoded_like(seed: int = 0) -> torch.Tensor:
    """[3, T, H, W] float32 with values on and around the uint8 rounding edges and the clamp bounds."""
    g = torch.Generator().manual_seed(seed)
    video = torch.rand(3, 5, 6, 7, generator=g) * 1.1 - 0.05
    edges = (torch.arange(256, dtype=torch.float32) + 0.5) / 255  # exactly between two levels
    video.view(-1)[:256] = edges
    return video


def test_uint8_matches_the_writers_conversion():
    video = decoded_like()
    got = frames_to_host(video)
    assert got.dtype == torch.uint8 and got.shape == (5, 6, 7, 3) and got.is_contiguous()
    want = to_uint8_frames(video.permute(1, 2, 3, 0).numpy())  # the numpy path the writers used before
    np.testing.assert_array_equal(got.numpy(), want)


def test_float32_returns_the_decoded_values():
    video = decoded_like(1)
    got = frames_to_host(video, torch.float32)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, video.permute(1, 2, 3, 0), rtol=0, atol=0)


def test_nan_and_unknown_dtype_are_refused():
    video = decoded_like(2)
    video[0, 0, 0, 0] = float("nan")
    with pytest.raises(RuntimeError, match="NaN"):
        frames_to_host(video)
    with pytest.raises(ValueError, match="uint8 or float32"):
        frames_to_host(decoded_like(), torch.float16)
