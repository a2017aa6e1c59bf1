"""Ulysses sequence parallelism for the joint attention (as the reference's ``parallel_states.py``).

Each of the ``degree`` ranks of a group holds a contiguous shard of the image tokens and all text
tokens. Around attention, one all-to-all turns the image q/k/v shards [B, n_r, H, D] into head
shards [B, N, H/P, D]; the text q/k/v are narrowed to the same heads. Each rank then runs the
one-device attention (:func:`gamecraft.model.attention.joint_attention_heads`) on its heads over the
whole sequence — per head the same computation as on one GPU — and a second all-to-all returns the
image outputs to their token shards while the text outputs are all-gathered over heads.

Shards may differ by one token (:func:`token_bounds`), so token counts need not divide the degree.
All collectives are plain ``torch.distributed`` calls (NCCL on GPUs, gloo on CPUs).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist

from gamecraft.model.attention import joint_attention_heads

from .layout import token_bounds


class SequenceParallel:
    """One rank's view of a sequence-parallel group (implements the model's ``TokenParallel``)."""

    def __init__(self, group, rank: int, degree: int):
        self.group = group
        self.rank = rank  # index within the group
        self.degree = degree
        self._bounds: dict[int, list[tuple[int, int]]] = {}
        self._total: int | None = None  # image tokens of the current pass (token_slice)

    def bounds(self, total: int) -> list[tuple[int, int]]:
        if total not in self._bounds:
            self._bounds[total] = token_bounds(total, self.degree)
        return self._bounds[total]

    def token_slice(self, total: int) -> slice:
        """This rank's image tokens out of ``total``; also fixes ``total`` for the pass's attention
        calls (the transformer calls this once at the start of every pass)."""
        self._total = total
        return slice(*self.bounds(total)[self.rank])

    # -- attention -----------------------------------------------------------------------------
    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, img_len: int,
                  text_lengths: Sequence[int], backend: str) -> torch.Tensor:
        """q, k, v: [B, n_r + L, H, D] (this rank's image shard, then all text). Returns [B, n_r + L, H*D]."""
        heads = q.shape[2]
        if heads % self.degree:
            raise ValueError(f"{heads} heads do not split over {self.degree} ranks")
        total = self._total
        if total is None:
            raise RuntimeError("token_slice() must be called before attention in a pass")
        sizes = [stop - start for start, stop in self.bounds(total)]
        if sizes[self.rank] != img_len:
            raise ValueError(f"rank {self.rank} holds {img_len} image tokens, expected {sizes[self.rank]}")
        per_rank = heads // self.degree
        mine = slice(self.rank * per_rank, (self.rank + 1) * per_rank)
        qkv = torch.stack((q, k, v))  # [3, B, n_r + L, H, D]
        img = self._tokens_to_heads(qkv[:, :, :img_len], sizes)  # [3, B, N, H/P, D]
        txt = qkv[:, :, img_len:, mine]
        full = torch.cat((img, txt), dim=2)
        out = joint_attention_heads(full[0], full[1], full[2], total, text_lengths, backend)  # [B, N + L, H/P, D]
        img_out = self._heads_to_tokens(out[:, :total], sizes)  # [B, n_r, H, D]
        txt_out = self._gather_heads(out[:, total:].contiguous())  # [B, L, H, D]
        return torch.cat((img_out, txt_out), dim=1).flatten(2)

    def _tokens_to_heads(self, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        """[S, B, n_r, H, D] token shard -> [S, B, N, H/P, D] head shard (S stacked tensors)."""
        stack, batch, n, heads, dim = x.shape
        p, h = self.degree, heads // self.degree
        # destination-major, token-major: piece j = my tokens of head group j, [n, S, B, h, D]
        send = x.reshape(stack, batch, n, p, h, dim).permute(3, 2, 0, 1, 4, 5).contiguous()
        unit = stack * batch * h * dim
        recv = torch.empty(sum(sizes) * unit, dtype=x.dtype, device=x.device)
        dist.all_to_all_single(recv, send.reshape(-1), output_split_sizes=[s * unit for s in sizes],
                               input_split_sizes=[n * unit] * p, group=self.group)
        # pieces arrive in source-rank order = token order: [N, S, B, h, D]
        return recv.view(sum(sizes), stack, batch, h, dim).permute(1, 2, 0, 3, 4)

    def _heads_to_tokens(self, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        """[B, N, H/P, D] head shard -> [B, n_r, H, D] token shard."""
        batch, total, h, dim = x.shape
        p = self.degree
        send = x.permute(1, 0, 2, 3).contiguous()  # [N, B, h, D]: piece j = tokens of rank j
        unit = batch * h * dim
        n = sizes[self.rank]
        recv = torch.empty(p * n * unit, dtype=x.dtype, device=x.device)
        dist.all_to_all_single(recv, send.reshape(-1), output_split_sizes=[n * unit] * p,
                               input_split_sizes=[s * unit for s in sizes], group=self.group)
        # [P (head group), n, B, h, D] -> [B, n, P, h, D] -> [B, n, H, D]
        return recv.view(p, n, batch, h, dim).permute(2, 1, 0, 3, 4).reshape(batch, n, p * h, dim)

    def _gather_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, H/P, D] -> [B, L, H, D] (every rank's heads, in rank order)."""
        parts = [torch.empty_like(x) for _ in range(self.degree)]
        dist.all_gather(parts, x, group=self.group)
        return torch.cat(parts, dim=2)

    # -- tokens --------------------------------------------------------------------------------
    def gather_tokens(self, x: torch.Tensor, total: int) -> torch.Tensor:
        """[B, n_r, C] shards -> [B, total, C] on every rank (shards padded to equal size for NCCL)."""
        sizes = [stop - start for start, stop in self.bounds(total)]
        longest = max(sizes)
        if x.shape[1] < longest:
            x = torch.cat((x, x.new_zeros(x.shape[0], longest - x.shape[1], *x.shape[2:])), dim=1)
        parts = [torch.empty_like(x) for _ in range(self.degree)]
        dist.all_gather(parts, x.contiguous(), group=self.group)
        return torch.cat([part[:, :size] for part, size in zip(parts, sizes)], dim=1)
