"""How a pass is split over ``world_size`` ranks: guidance rows × sequence shards (pure, CPU-testable).

A transformer pass has 1 row (distilled preset) or 2 rows (classifier-free guidance: uncond, cond).
With 2 rows and an even world, the rows go to two halves of the ranks (*guidance parallel*, no
communication inside the pass); within a half, the image tokens are split (*sequence parallel*,
Ulysses: every rank then attends with ``num_heads / sp_degree`` heads over the whole sequence).
Rank ``r`` is guidance group ``r // sp_degree`` and shard ``r % sp_degree``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParallelLayout:
    world_size: int
    cfg_degree: int  # 1, or 2 when the two guidance rows run on separate halves of the ranks
    sp_degree: int  # ranks that share one row's image tokens

    def __post_init__(self) -> None:
        if self.cfg_degree not in (1, 2) or self.cfg_degree * self.sp_degree != self.world_size:
            raise ValueError(
                f"invalid layout: {self.cfg_degree} guidance groups × {self.sp_degree} shards "
                f"for {self.world_size} ranks"
            )

    def cfg_index(self, rank: int) -> int:
        """Which guidance row rank ``rank`` computes (0 when ``cfg_degree`` is 1: all rows)."""
        return rank // self.sp_degree

    def sp_groups(self) -> list[list[int]]:
        """Ranks that split one row's tokens, one list per guidance group."""
        return [list(range(c * self.sp_degree, (c + 1) * self.sp_degree)) for c in range(self.cfg_degree)]

    def cfg_groups(self) -> list[list[int]]:
        """Ranks holding the same token shard of different rows (gathered after the pass)."""
        return [list(range(s, self.world_size, self.sp_degree)) for s in range(self.sp_degree)]


def check_world_size(world_size: int, num_heads: int) -> None:
    """``ValueError`` unless every layout :func:`choose_layout` can pick splits the heads evenly."""
    if world_size < 1:
        raise ValueError(f"need at least one rank, got {world_size}")
    for sp in {world_size, world_size // 2 if world_size % 2 == 0 else world_size}:
        if num_heads % sp:
            valid = [d for d in range(1, num_heads + 1) if num_heads % d == 0 and d <= 8]
            raise ValueError(
                f"{world_size} GPUs cannot split {num_heads} attention heads evenly; "
                f"use one of {valid} GPUs (or twice that with guidance)"
            )


def choose_layout(world_size: int, rows: int, num_heads: int) -> ParallelLayout:
    """The split for a pass of ``rows`` (1 or 2) rows: guidance-parallel when it can be, else all
    ranks on the sequence. ``ValueError`` when the heads do not divide."""
    if rows not in (1, 2):
        raise ValueError(f"a pass has 1 or 2 rows, got {rows}")
    cfg = 2 if rows == 2 and world_size % 2 == 0 else 1
    layout = ParallelLayout(world_size, cfg, world_size // cfg)
    if num_heads % layout.sp_degree:
        raise ValueError(f"{num_heads} attention heads do not split over {layout.sp_degree} ranks")
    return layout


def token_bounds(total: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) shards of ``total`` tokens, sizes differing by at most one (the first
    ``total % parts`` shards get the extra token), as ``torch.tensor_split`` does."""
    if parts < 1 or total < parts:
        raise ValueError(f"cannot split {total} tokens into {parts} non-empty shards")
    base, extra = divmod(total, parts)
    bounds, start = [], 0
    for index in range(parts):
        stop = start + base + (index < extra)
        bounds.append((start, stop))
        start = stop
    return bounds
