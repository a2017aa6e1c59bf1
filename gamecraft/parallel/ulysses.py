"""Ulysses sequence parallelism for the joint attention (as the reference's ``parallel_states.py``).

Each of the ``degree`` ranks of a group holds a contiguous shard of the image tokens and all text
tokens. Around attention, one all-to-all turns the image q/k/v shards [B, n_r, H, D] into head
shards [B, N, H/P, D]; the text q/k/v are narrowed to the same heads. Each rank then runs the
one-device attention (:func:`gamecraft.model.attention.joint_attention_heads`) on its heads over the
whole sequence — per head the same computation as on one GPU — and a second all-to-all returns the
image outputs to their token shards while the text outputs are all-gathered over heads. The send
buffers are packed by :meth:`SequenceParallel.pack_heads`, inside the compiled block, and the image
outputs are returned as views of the receive buffers for the block's compiled code to read: no
eager copy arranges the heads on either side. The heads can be taken in several groups so that one
group's exchanges overlap another group's attention (``head_chunks``; the split over heads does not
change any head's arithmetic).

Shards may differ by one token (:func:`token_bounds`), so token counts need not divide the degree.
All collectives are plain ``torch.distributed`` calls (NCCL on GPUs, gloo on CPUs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

from gamecraft.model.attention import joint_attention_heads

from .layout import token_bounds


def head_groups(heads_per_rank: int, chunks: int) -> list[tuple[int, int]]:
    """``chunks`` contiguous [first, stop) ranges of a rank's ``heads_per_rank`` heads (sizes differing
    by at most one; at most one head each)."""
    if chunks < 1:
        raise ValueError(f"head_chunks must be at least 1, got {chunks}")
    return token_bounds(heads_per_rank, min(chunks, heads_per_rank))


class SequenceParallel:
    """One rank's view of a sequence-parallel group (implements the model's ``TokenParallel``).

    Immutable once made: :meth:`with_options` gives the group with other exchange options, :meth:`shard`
    the view of one pass's image tokens (both cached, so a compiled block sees the same objects on every
    pass and never recompiles for them).
    """

    def __init__(self, group, rank: int, degree: int, head_chunks: int = 1, pack_in_graph: bool = True):
        self.group = group
        self.rank = rank  # index within the group
        self.degree = degree
        self.head_chunks = head_chunks  # head groups per rank whose exchanges overlap attention
        # where pack_heads runs: inside the compiled block (fused, the default) or in the eager exchange
        # (kept for the side-by-side benchmark; the same operations, though Inductor may round the fused
        # RMSNorm/RoPE kernels differently)
        self.pack_in_graph = pack_in_graph
        self._bounds: dict[int, list[tuple[int, int]]] = {}
        self._shards: dict[int, TokenShard] = {}
        self._siblings: dict[tuple[int, bool], SequenceParallel] = {(head_chunks, pack_in_graph): self}

    def with_options(self, head_chunks: int, pack_in_graph: bool) -> SequenceParallel:
        """The same group with ``head_chunks`` overlap groups and the packing placement ``pack_in_graph``."""
        key = (head_chunks, pack_in_graph)
        if key not in self._siblings:
            head_groups(1, head_chunks)  # checks head_chunks
            sibling = SequenceParallel(self.group, self.rank, self.degree, head_chunks, pack_in_graph)
            sibling._bounds, sibling._siblings = self._bounds, self._siblings
            self._siblings[key] = sibling
        return self._siblings[key]

    def bounds(self, total: int) -> list[tuple[int, int]]:
        if total not in self._bounds:
            self._bounds[total] = token_bounds(total, self.degree)
        return self._bounds[total]

    def shard(self, total: int) -> TokenShard:
        """This rank's view of a pass over ``total`` image tokens."""
        if total not in self._shards:
            self._shards[total] = TokenShard(self, total)
        return self._shards[total]

    # -- attention -----------------------------------------------------------------------------
    def pack_heads(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> list[torch.Tensor]:
        """This rank's image q, k, v [B, n_r, H, D] → per head group, its all-to-all send buffer
        [P (destination rank), n_r, 3, B, h_g, D], contiguous.

        Pure tensor operations: called inside the compiled block (``pack_in_graph``), Inductor fuses
        them into the kernels that produce q and k (RMSNorm, RoPE), so no separate copy runs.
        """
        heads = q.shape[2]
        if heads % self.degree:
            raise ValueError(f"{heads} heads do not split over {self.degree} ranks")
        per_rank = heads // self.degree
        qkv = torch.stack((q, k, v), dim=2).unflatten(3, (self.degree, per_rank))  # [B, n_r, 3, P, H/P, D]
        return [
            qkv[..., first:stop, :].permute(3, 1, 2, 0, 4, 5).contiguous()
            for first, stop in head_groups(per_rank, self.head_chunks)
        ]

    def attention(
        self,
        total: int,
        sends: list[torch.Tensor],
        txt_q: torch.Tensor,
        txt_k: torch.Tensor,
        txt_v: torch.Tensor,
        text_lengths: Sequence[int],
        backend: str,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Joint attention of this rank's image tokens (``sends`` from :meth:`pack_heads`; ``total`` image
        tokens over the group) with all text tokens txt_* [B, L, H, D].

        Returns (per head group [first, stop), the image outputs [B, n_r, P, h_g, D] as a view of
        the receive buffer (heads p·H/P + first … of rank p's group); the text outputs [B, L, H, D]).

        Every group's q/k/v exchange is issued at once (asynchronously, in order), and each group's
        output exchange as soon as its attention is done: with ``head_chunks`` > 1, while group g
        attends, the exchanges of groups g+1… (inputs) and g−1 (outputs) run. Per head the arithmetic
        is unchanged.
        """
        batch, text_len, heads, dim = txt_q.shape
        sizes = [stop - start for start, stop in self.bounds(total)]
        img_len = sends[0].shape[1]
        if sizes[self.rank] != img_len:
            raise ValueError(f"rank {self.rank} holds {img_len} image tokens, expected {sizes[self.rank]}")
        per_rank = heads // self.degree
        groups = head_groups(per_rank, self.head_chunks)
        if len(sends) != len(groups):
            raise ValueError(f"{len(sends)} send buffers for {len(groups)} head groups")
        inputs = [self._send_heads(send, sizes, text_len) for send in sends]
        outputs, txt_parts = [], []
        for (first, stop), (work, recv) in zip(groups, inputs, strict=False):
            work.wait()
            mine = slice(self.rank * per_rank + first, self.rank * per_rank + stop)
            # the text rows go after the N received image rows, so q/k/v are views of one buffer
            full = recv.view(total + text_len, 3, batch, stop - first, dim)
            for index, tensor in enumerate((txt_q, txt_k, txt_v)):
                full[total:, index] = tensor[:, :, mine].transpose(0, 1)
            full = full.permute(1, 2, 0, 3, 4)  # [3, B, N + L, h_g, D]
            out = joint_attention_heads(full[0], full[1], full[2], total, text_lengths, backend)  # [B, N + L, h_g, D]
            outputs.append(self._send_tokens(out[:, :total], sizes))
            txt_parts.append(out[:, total:])
        # the text rows are small: gathered over heads once, while the last output exchange runs
        txt = self._gather_heads(torch.cat(txt_parts, dim=2).contiguous())
        img = []
        for (first, stop), (work, recv) in zip(groups, outputs, strict=False):
            work.wait()  # [P (head owner), n_r, B, h_g, D] -> [B, n_r, P, h_g, D]
            img.append(recv.view(self.degree, img_len, batch, stop - first, dim).permute(2, 1, 0, 3, 4))
        return img, txt

    def _send_heads(self, send: torch.Tensor, sizes: list[int], spare_rows: int):
        """Start the exchange of one head group: ``send`` [P, n_r, 3, B, h_g, D] (:meth:`pack_heads`)
        goes to the head owners. Returns (work, receive buffer [N + spare_rows, 3, B, h_g, D]: the
        first N rows once done, token-major in source-rank = token order; the spare rows are left for
        the caller)."""
        unit = send[0, 0].numel()
        recv = send.new_empty((sum(sizes) + spare_rows) * unit)
        work = dist.all_to_all_single(
            recv[: sum(sizes) * unit],
            send.view(-1),
            output_split_sizes=[s * unit for s in sizes],
            input_split_sizes=[send.shape[1] * unit] * self.degree,
            group=self.group,
            async_op=True,
        )
        return work, recv

    def _send_tokens(self, out: torch.Tensor, sizes: list[int]):
        """Start returning image outputs [B, N, h_g, D] (this rank's heads, all tokens) to the token
        owners. Returns (work, receive buffer [P, n_r, B, h_g, D] once done)."""
        batch, _, width, dim = out.shape
        send = out.permute(1, 0, 2, 3).contiguous()  # [N, B, h_g, D]: piece j = tokens of rank j
        unit = batch * width * dim
        n = sizes[self.rank]
        recv = send.new_empty(self.degree * n * unit)
        work = dist.all_to_all_single(
            recv,
            send.view(-1),
            output_split_sizes=[n * unit] * self.degree,
            input_split_sizes=[s * unit for s in sizes],
            group=self.group,
            async_op=True,
        )
        return work, recv

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
        return torch.cat([part[:, :size] for part, size in zip(parts, sizes, strict=False)], dim=1)


class TokenShard:
    """A :class:`SequenceParallel` group's view of one pass over ``total`` image tokens: this rank's
    tokens (``local``), the attention exchange and the gathering of the outputs. What the transformer
    blocks receive as their ``sp``."""

    def __init__(self, group: SequenceParallel, total: int):
        self.group = group
        self.total = total
        self.local = slice(*group.bounds(total)[group.rank])

    @property
    def pack_in_graph(self) -> bool:
        return self.group.pack_in_graph

    def pack_heads(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> list[torch.Tensor]:
        return self.group.pack_heads(q, k, v)

    def attention(
        self,
        sends: list[torch.Tensor],
        txt_q: torch.Tensor,
        txt_k: torch.Tensor,
        txt_v: torch.Tensor,
        text_lengths: Sequence[int],
        backend: str,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        return self.group.attention(self.total, sends, txt_q, txt_k, txt_v, text_lengths, backend)

    def gather_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """[B, n_r, C] shards -> [B, total, C] on every rank."""
        return self.group.gather_tokens(x, self.total)
