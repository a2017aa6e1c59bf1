"""CameraNet: per-pixel Plücker embeddings -> tokens added to the patchified image tokens."""

from __future__ import annotations

import torch
import torch.nn as nn

from .layers import PatchEmbed


def compress_time(x: torch.Tensor, batch: int) -> torch.Tensor:
    """Halve the frame count: x [batch*F, C, h, w] -> [batch*F', C, h, w].

    Odd F keeps frame 0 and averages the remaining frames in pairs (33 -> 1+16); even F averages
    all frames in pairs (4 -> 2). The reference's special case for F in (34, 66) is never reached
    by GameCraft (inputs are 33 or 4 frames) and is not reproduced; such inputs raise.
    """
    frames = x.shape[0] // batch
    if frames in (34, 66):
        raise ValueError(f"compress_time: {frames} frames take the reference's unreproduced 34/66 branch")
    x = x.unflatten(0, (batch, frames))  # [B, F, C, h, w]
    if frames % 2:
        first, rest = x[:, :1], x[:, 1:]
        if rest.shape[1]:
            rest = rest.unflatten(1, (-1, 2)).mean(dim=2)
        x = torch.cat([first, rest], dim=1)
    else:
        x = x.unflatten(1, (-1, 2)).mean(dim=2)
    return x.flatten(0, 1)


class CameraNet(nn.Module):
    """Plücker [B, F, 6, H, W] -> tokens [B, F'*(H/16)*(W/16), hidden] (F = 33 -> F' = 9; 4 -> 1).

    PixelUnshuffle(down) -> 1x1 conv, GroupNorm(2), ReLU -> compress_time -> 1x1 conv, GroupNorm(2),
    ReLU -> compress_time -> 1x1 conv to ``out_channels`` -> Conv3d patch embed -> times ``scale``.
    The reference builds it without a dtype, so it stays float32 in a bf16 model; its input is cast
    to the parameter dtype and so is its output.
    """

    def __init__(
        self,
        in_channels: int,
        downscale_coef: int,
        out_channels: int,
        patch_size: tuple[int, int, int],
        hidden_size: int,
        dtype=None,
        device=None,
    ):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        c0 = in_channels * downscale_coef**2
        c1, c2 = c0 // 2, c0 // 4
        self.unshuffle = nn.PixelUnshuffle(downscale_coef)
        self.encode_first = nn.Sequential(nn.Conv2d(c0, c1, kernel_size=1, **kw), nn.GroupNorm(2, c1, **kw), nn.ReLU())
        self.encode_second = nn.Sequential(nn.Conv2d(c1, c2, kernel_size=1, **kw), nn.GroupNorm(2, c2, **kw), nn.ReLU())
        self.final_proj = nn.Conv2d(c2, out_channels, kernel_size=1, **kw)
        self.scale = nn.Parameter(torch.ones(1, **kw))
        self.camera_in = PatchEmbed(patch_size, out_channels, hidden_size, **kw)

    def encode(self, camera_states: torch.Tensor) -> torch.Tensor:
        """[B, F, C, H, W] -> per-latent-frame features [B, out_channels, F', H/down, W/down]."""
        batch = camera_states.shape[0]
        x = camera_states.to(self.scale.dtype).flatten(0, 1)  # [B*F, C, H, W]
        x = self.encode_first(self.unshuffle(x))
        x = self.encode_second(compress_time(x, batch))
        x = self.final_proj(compress_time(x, batch))  # [B*F', out, h, w]
        return x.unflatten(0, (batch, -1)).transpose(1, 2)  # [B, out, F', h, w]

    def forward(self, camera_states: torch.Tensor) -> torch.Tensor:
        return self.camera_in(self.encode(camera_states)) * self.scale


# Latent frames of the DiT input -> camera frames of the zero ("no camera motion") pass that
# covers the conditioning frames. 10 = first chunk (1 image latent), 18 = continuation (9 history
# latents); the reference's 9 (no conditioning frames) is kept for completeness.
ZERO_CAMERA_FRAMES: dict[int, int | None] = {10: 4, 18: 33, 9: None}


def camera_tokens(camera_net: CameraNet, cam_latents: torch.Tensor, latent_frames: int) -> torch.Tensor:
    """Camera tokens for a DiT input with ``latent_frames`` latent frames, float32.

    cam_latents: Plücker [B, 33, 6, H, W] of the generated frames -> 9 latent frames of tokens.
    The conditioning latent frames get the tokens of an all-zero camera input: ``zeros[:, :4]``
    (1 latent frame) for a first chunk (10 latent frames), all 33 zero frames (9 latent frames) for
    a continuation (18). Returns [B, latent_frames * (H/16) * (W/16), hidden].
    """
    if latent_frames not in ZERO_CAMERA_FRAMES:
        raise ValueError(
            f"unsupported number of latent frames {latent_frames}; expected one of {sorted(ZERO_CAMERA_FRAMES)}"
        )
    zero_frames = ZERO_CAMERA_FRAMES[latent_frames]
    parts = []
    if zero_frames is not None:
        # The zero pass is the same for every row: run it once and broadcast.
        zeros = cam_latents.new_zeros((1, zero_frames) + tuple(cam_latents.shape[2:]))
        parts.append(camera_net(zeros).float().expand(cam_latents.shape[0], -1, -1))
    parts.append(camera_net(cam_latents).float())
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
