"""The reference's spatial VAE tiling as pure tensor functions (used by :mod:`gamecraft.model.vae`).

Tiles of ``tile`` latents (or pixels) every ``stride``, top→bottom then left→right; neighbours are
blended linearly over ``blend`` rows/columns, in place, so later tiles see already-blended neighbours.
"""

from __future__ import annotations

import torch


def split_tiles(x: torch.Tensor, tile: int, stride: int) -> list[list[torch.Tensor]]:
    """Overlapping spatial tiles ``x[..., i:i+tile, j:j+tile]`` every ``stride``, as rows of columns
    (edge tiles are smaller), in the reference's order."""
    return [
        [x[..., i : i + tile, j : j + tile] for j in range(0, x.shape[-1], stride)]
        for i in range(0, x.shape[-2], stride)
    ]


def blend_tiles(rows: list[list[torch.Tensor]], blend: int, keep: int) -> torch.Tensor:
    """Stitch a grid of overlapping tiles ``rows[i][j]`` ``[B, C, T, h, w]`` as the reference does.

    Each tile is blended (in place, so later tiles see already-blended neighbours) with the tile above
    and then the tile to its left over ``blend`` rows/columns, and its first ``keep`` rows/columns are kept.
    """
    out_rows = []
    for i, row in enumerate(rows):
        kept = []
        for j, tile in enumerate(row):
            if i > 0:
                blend_into(rows[i - 1][j], tile, blend, dim=-2)
            if j > 0:
                blend_into(row[j - 1], tile, blend, dim=-1)
            kept.append(tile[..., :keep, :keep])
        out_rows.append(torch.cat(kept, dim=-1))
    return torch.cat(out_rows, dim=-2)


def blend_into(a: torch.Tensor, b: torch.Tensor, extent: int, dim: int) -> None:
    """``b[:extent] = a[-extent:]·(1 − w) + b[:extent]·w`` along ``dim`` with ``w = k / extent`` in b's dtype."""
    extent = min(a.shape[dim], b.shape[dim], extent)
    if extent == 0:
        return
    weight = torch.arange(extent, device=b.device, dtype=b.dtype) / extent
    weight = weight.view((extent, 1) if dim == -2 else (extent,))
    head = b.narrow(dim, 0, extent)
    head.copy_(a.narrow(dim, a.shape[dim] - extent, extent) * (1 - weight) + head * weight)
