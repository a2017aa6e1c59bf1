"""Double-stream and single-stream MM-DiT blocks (official parameter names).

Dtypes: the residual streams arrive and leave in float32; LayerNorm, modulation, QK-RMSNorm
statistics and RoPE run in float32; the linears and attention run in the parameter dtype (bf16 in
production). This is what the reference does under ``torch.autocast(bf16)`` for the image stream
(which becomes float32 there once the float32 camera tokens are added).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from .attention import HeadParallel, block_attention, join_heads, pack_attention
from .layers import MLP, RMSNorm, gated, layer_norm, modulate
from .rope import apply_rope


class Modulation(nn.Module):
    """SiLU + linear: vec [B, hidden] -> ``factor`` chunks of [B, hidden] (shift/scale/gate ...)."""

    def __init__(self, hidden_size: int, factor: int, dtype=None, device=None):
        super().__init__()
        self.factor = factor
        self.act = nn.SiLU()
        self.linear = nn.Linear(hidden_size, factor * hidden_size, dtype=dtype, device=device)

    def forward(self, vec: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.linear(self.act(vec)).chunk(self.factor, dim=-1)


def _split_heads(qkv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B, N, 3*H*D] (q | k | v, heads inside) -> three views [B, N, H, D]."""
    return qkv.unflatten(-1, (3, num_heads, -1)).unbind(dim=2)


class DoubleStreamBlock(nn.Module):
    """Separate weights for image and text tokens, joint attention over ``[img ; txt]``."""

    def __init__(
        self, hidden_size: int, num_heads: int, mlp_hidden_dim: int, qkv_bias: bool = True, dtype=None, device=None
    ):
        super().__init__()
        self.num_heads = num_heads
        head_dim = hidden_size // num_heads
        kw = dict(dtype=dtype, device=device)
        gelu = nn.GELU(approximate="tanh")
        for stream in ("img", "txt"):
            self.add_module(f"{stream}_mod", Modulation(hidden_size, 6, **kw))
            self.add_module(f"{stream}_attn_qkv", nn.Linear(hidden_size, 3 * hidden_size, bias=qkv_bias, **kw))
            self.add_module(f"{stream}_attn_q_norm", RMSNorm(head_dim, **kw))
            self.add_module(f"{stream}_attn_k_norm", RMSNorm(head_dim, **kw))
            self.add_module(f"{stream}_attn_proj", nn.Linear(hidden_size, hidden_size, bias=qkv_bias, **kw))
            self.add_module(f"{stream}_mlp", MLP(hidden_size, mlp_hidden_dim, gelu, **kw))

    def forward(
        self,
        img: torch.Tensor,
        txt: torch.Tensor,
        vec: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        text_lengths: Sequence[int],
        attention_backend: str = "sdpa",
        sp: HeadParallel | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """img [B, N, hidden], txt [B, L, hidden] (float32 streams), vec [B, hidden],
        rope = (cos, sin) [N, head_dim]; with ``sp``, N is this rank's image-token shard.
        Returns the updated (img, txt)."""
        dtype = self.img_mod.linear.weight.dtype  # compute dtype (not a quantized layer: see fp8.py)
        img_shift1, img_scale1, img_gate1, img_shift2, img_scale2, img_gate2 = self.img_mod(vec)
        txt_shift1, txt_scale1, txt_gate1, txt_shift2, txt_scale2, txt_gate2 = self.txt_mod(vec)

        img_q, img_k, img_v = _split_heads(
            self.img_attn_qkv(modulate(layer_norm(img), img_shift1, img_scale1).to(dtype)), self.num_heads
        )
        img_q = apply_rope(self.img_attn_q_norm(img_q), *rope)
        img_k = apply_rope(self.img_attn_k_norm(img_k), *rope)

        txt_q, txt_k, txt_v = _split_heads(
            self.txt_attn_qkv(modulate(layer_norm(txt), txt_shift1, txt_scale1).to(dtype)), self.num_heads
        )
        txt_q = self.txt_attn_q_norm(txt_q)
        txt_k = self.txt_attn_k_norm(txt_k)

        packed = pack_attention(img_q, img_k, img_v, txt_q, txt_k, txt_v, sp)
        img_parts, txt_attn = block_attention(packed, text_lengths, attention_backend, sp)
        img_attn = join_heads(img_parts)

        img = img + gated(self.img_attn_proj(img_attn), img_gate1)
        img = img + gated(self.img_mlp(modulate(layer_norm(img), img_shift2, img_scale2).to(dtype)), img_gate2)
        txt = txt + gated(self.txt_attn_proj(txt_attn), txt_gate1)
        txt = txt + gated(self.txt_mlp(modulate(layer_norm(txt), txt_shift2, txt_scale2).to(dtype)), txt_gate2)
        return img, txt


class SingleStreamBlock(nn.Module):
    """One weight set for ``x = [img ; txt]``: ``linear1 -> [qkv | mlp]``, ``linear2(attn | gelu(mlp))``."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_hidden_dim: int, dtype=None, device=None):
        super().__init__()
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.mlp_hidden_dim = mlp_hidden_dim
        head_dim = hidden_size // num_heads
        kw = dict(dtype=dtype, device=device)
        self.linear1 = nn.Linear(hidden_size, 3 * hidden_size + mlp_hidden_dim, **kw)
        self.linear2 = nn.Linear(hidden_size + mlp_hidden_dim, hidden_size, **kw)
        self.q_norm = RMSNorm(head_dim, **kw)
        self.k_norm = RMSNorm(head_dim, **kw)
        self.mlp_act = nn.GELU(approximate="tanh")
        self.modulation = Modulation(hidden_size, 3, **kw)

    def forward(
        self,
        x: torch.Tensor,
        vec: torch.Tensor,
        img_len: int,
        rope: tuple[torch.Tensor, torch.Tensor],
        text_lengths: Sequence[int],
        attention_backend: str = "sdpa",
        sp: HeadParallel | None = None,
    ) -> torch.Tensor:
        """x [B, img_len + L, hidden] float32 stream, vec [B, hidden]; with ``sp``, img_len is this
        rank's image-token shard. Returns updated x."""
        dtype = self.modulation.linear.weight.dtype  # compute dtype (not a quantized layer: see fp8.py)
        shift, scale, gate = self.modulation(vec)
        qkv, mlp = self.linear1(modulate(layer_norm(x), shift, scale).to(dtype)).split(
            [3 * self.hidden_size, self.mlp_hidden_dim], dim=-1
        )
        q, k, v = _split_heads(qkv, self.num_heads)
        q = self.q_norm(q)
        k = self.k_norm(k)
        packed = pack_attention(
            apply_rope(q[:, :img_len], *rope),
            apply_rope(k[:, :img_len], *rope),
            v[:, :img_len],
            q[:, img_len:],
            k[:, img_len:],
            v[:, img_len:],
            sp,
        )
        img_parts, txt_attn = block_attention(packed, text_lengths, attention_backend, sp)
        attn = torch.cat((join_heads(img_parts), txt_attn), dim=1)
        out = self.linear2(torch.cat((attn, self.mlp_act(mlp)), dim=-1))
        return x + gated(out, gate)
