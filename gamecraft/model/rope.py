"""3-D rotary position embedding of the image tokens (interleaved pairs, as the reference)."""

from __future__ import annotations

import torch

from .config import TransformerConfig


def token_grid(latent_frames: int, latent_h: int, latent_w: int, config: TransformerConfig) -> tuple[int, int, int]:
    """Token grid (t, h, w) of a latent video [.., latent_frames, latent_h, latent_w] after patchify."""
    pt, ph, pw = config.patch_size
    if latent_frames % pt or latent_h % ph or latent_w % pw:
        raise ValueError(
            f"latent size {(latent_frames, latent_h, latent_w)} is not divisible by the patch size {config.patch_size}"
        )
    return latent_frames // pt, latent_h // ph, latent_w // pw


def rope_tables(
    latent_frames: int,
    latent_h: int,
    latent_w: int,
    config: TransformerConfig,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables for every image token, float32, each [tokens, head_dim].

    Tokens are ordered t-major, then h, then w (the order of ``img_in``'s flatten). For an axis of
    rope dim ``d`` and integer token position ``p`` the angles are ``p * theta**(-2i/d)``,
    ``i < d/2``; every value is repeated twice (interleaved pairs) and the axes are concatenated
    (t | h | w). Equals the reference's ``get_rotary_pos_embed`` for a video whose latent size is
    (latent_frames, latent_h, latent_w), e.g. (10 | 18, 88, 152) at 704x1216.
    Computed in float32 with the reference's operation order, so the tables are bit-identical.
    """
    grid = token_grid(latent_frames, latent_h, latent_w, config)
    axes = [torch.arange(n, dtype=torch.float32, device=device) for n in grid]
    positions = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0).reshape(3, -1)  # [3, tokens]
    cos_parts, sin_parts = [], []
    for axis_positions, dim in zip(positions, config.rope_dim_list, strict=False):
        exponents = torch.arange(0, dim, 2, device=device)[: dim // 2].float() / dim
        inv_freq = 1.0 / (config.rope_theta**exponents)  # [dim/2]
        angles = torch.outer(axis_positions, inv_freq)  # [tokens, dim/2]
        cos_parts.append(angles.cos().repeat_interleave(2, dim=1))
        sin_parts.append(angles.sin().repeat_interleave(2, dim=1))
    return torch.cat(cos_parts, dim=1), torch.cat(sin_parts, dim=1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs ``(x0, x1)`` of ``x`` [B, tokens, heads, head_dim] by the tables.

    ``out = x*cos + rot(x)*sin`` with ``rot(x0, x1) = (-x1, x0)``, computed in float32 and cast back
    to ``x.dtype`` (as the reference). ``cos``/``sin``: [tokens, head_dim].
    """
    xf = x.float()
    pairs = xf.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    cos = cos[:, None, :]
    sin = sin[:, None, :]
    return (xf * cos + rotated * sin).to(x.dtype)
