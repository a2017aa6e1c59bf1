"""SingleTokenRefiner: projects the LLM text states into the transformer width (``txt_in``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import refiner_attention
from .layers import LAYER_NORM_EPS, MLP, TextProjection, TimestepEmbedder, gated


class RefinerBlock(nn.Module):
    """Pre-LN self-attention + SiLU MLP, each with a gated residual (gates from the condition c).

    No QK-norm, no RoPE; LayerNorms carry weights (eps 1e-6).
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, dtype=None, device=None):
        super().__init__()
        self.num_heads = num_heads
        kw = dict(dtype=dtype, device=device)
        self.norm1 = nn.LayerNorm(hidden_size, eps=LAYER_NORM_EPS, **kw)
        self.self_attn_qkv = nn.Linear(hidden_size, 3 * hidden_size, **kw)
        self.self_attn_proj = nn.Linear(hidden_size, hidden_size, **kw)
        self.norm2 = nn.LayerNorm(hidden_size, eps=LAYER_NORM_EPS, **kw)
        self.mlp = MLP(hidden_size, int(hidden_size * mlp_ratio), nn.SiLU(), **kw)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, **kw))

    def forward(
        self, x: torch.Tensor, c: torch.Tensor, text_lengths: Sequence[int], attention_backend: str
    ) -> torch.Tensor:
        """x: [B, L, hidden] text tokens, c: [B, hidden] condition. Returns [B, L, hidden]."""
        gate_msa, gate_mlp = self.adaLN_modulation(c).chunk(2, dim=1)
        qkv = self.self_attn_qkv(_ln(self.norm1, x))
        q, k, v = qkv.unflatten(-1, (3, self.num_heads, -1)).unbind(dim=2)  # each [B, L, H, D]
        attn = refiner_attention(q, k, v, text_lengths, attention_backend)
        x = x + gated(self.self_attn_proj(attn), gate_msa)
        return x + gated(self.mlp(_ln(self.norm2, x)), gate_mlp)


def _ln(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm in float32 (as autocast does in the reference), cast back to the weight dtype."""
    dtype = norm.weight.dtype
    out = F.layer_norm(x.float(), norm.normalized_shape, norm.weight.float(), norm.bias.float(), norm.eps)
    return out.to(dtype)


class SingleTokenRefiner(nn.Module):
    """LLM text states [B, L, text_dim] + timesteps [B] + mask -> refined tokens [B, L, hidden].

    The condition is ``t_embedder(t) + c_embedder(masked mean of the text states)``; the tokens go
    through ``input_embedder`` and ``depth`` :class:`RefinerBlock` s whose attention follows the
    reference mask (see :func:`~gamecraft.model.attention.refiner_attention`).
    """

    def __init__(
        self,
        text_dim: int,
        hidden_size: int,
        num_heads: int,
        depth: int,
        mlp_ratio: float = 4.0,
        freq_dim: int = 256,
        dtype=None,
        device=None,
    ):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.input_embedder = nn.Linear(text_dim, hidden_size, **kw)
        self.t_embedder = TimestepEmbedder(hidden_size, freq_dim, **kw)
        self.c_embedder = TextProjection(text_dim, hidden_size, **kw)
        self.individual_token_refiner = nn.Module()
        self.individual_token_refiner.blocks = nn.ModuleList(
            [RefinerBlock(hidden_size, num_heads, mlp_ratio, **kw) for _ in range(depth)]
        )

    def forward(
        self,
        text_states: torch.Tensor,
        t: torch.Tensor,
        text_mask: torch.Tensor,
        text_lengths: Sequence[int],
        attention_backend: str = "sdpa",
    ) -> torch.Tensor:
        """text_states [B, L, text_dim], t [B], text_mask [B, L] (0/1, right-padded),
        text_lengths = its row sums as Python ints. Returns [B, L, hidden] in the weight dtype."""
        dtype = self.input_embedder.weight.dtype
        mask = text_mask.to(torch.float32).unsqueeze(-1)  # [B, L, 1]
        pooled = (text_states.float() * mask).sum(dim=1) / mask.sum(dim=1)  # [B, text_dim]
        c = self.t_embedder(t) + self.c_embedder(pooled.to(dtype))
        x = self.input_embedder(text_states.to(dtype))
        for block in self.individual_token_refiner.blocks:
            x = block(x, c, text_lengths, attention_backend)
        return x
