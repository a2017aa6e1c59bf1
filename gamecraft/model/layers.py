"""Small building blocks shared by the transformer, the token refiner and the final layer.

Attribute names follow the official checkpoint keys (``mlp.0``, ``in_layer``, ``fc1``,
``adaLN_modulation.1`` ...), so official state dicts load without renaming.

Dtype convention (see docs/architecture.md): parameters hold the compute dtype; normalisations and
RoPE run in float32 and cast back, like the reference under autocast.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

LAYER_NORM_EPS = 1e-6


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features [B, dim] (cos half, then sin half) of timesteps t [B] (0..1000, float)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    """Affine-free LayerNorm (eps 1e-6) over the last dim, in float32; returns float32."""
    return F.layer_norm(x.float(), (x.shape[-1],), eps=LAYER_NORM_EPS)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x * (1 + scale) + shift`` with per-row shift/scale [B, D] broadcast over tokens of x [B, N, D]."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def gated(x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """``x * gate`` with a per-row gate [B, D] broadcast over tokens of x [B, N, D]."""
    return x * gate.unsqueeze(1)


class RMSNorm(nn.Module):
    """RMSNorm over the last dim (eps 1e-6), normalised in float32, then cast and scaled by ``weight``."""

    def __init__(self, dim: int, eps: float = 1e-6, dtype: torch.dtype | None = None, device=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, dtype=dtype, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.to(x.dtype) * self.weight


class MLP(nn.Module):
    """fc1 -> activation -> fc2. [.., in] -> [.., in]."""

    def __init__(self, dim: int, hidden_dim: int, activation: nn.Module, dtype=None, device=None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, dtype=dtype, device=device)
        self.act = activation
        self.fc2 = nn.Linear(hidden_dim, dim, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TimestepEmbedder(nn.Module):
    """Timesteps [B] -> sinusoidal features (freq_dim) -> Linear, SiLU, Linear -> [B, hidden]."""

    def __init__(self, hidden_size: int, freq_dim: int = 256, dtype=None, device=None):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(
            nn.Linear(freq_dim, hidden_size, dtype=dtype, device=device),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, dtype=dtype, device=device),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        features = timestep_embedding(t, self.freq_dim).to(self.mlp[0].weight.dtype)
        return self.mlp(features)


class MLPEmbedder(nn.Module):
    """CLIP pooled vector [B, in_dim] -> in_layer, SiLU, out_layer -> [B, hidden]."""

    def __init__(self, in_dim: int, hidden_size: int, dtype=None, device=None):
        super().__init__()
        self.in_layer = nn.Linear(in_dim, hidden_size, dtype=dtype, device=device)
        self.silu = nn.SiLU()
        self.out_layer = nn.Linear(hidden_size, hidden_size, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_layer(self.silu(self.in_layer(x.to(self.in_layer.weight.dtype))))


class TextProjection(nn.Module):
    """[.., in_dim] -> linear_1, SiLU, linear_2 -> [.., hidden] (the refiner's context embedder)."""

    def __init__(self, in_dim: int, hidden_size: int, dtype=None, device=None):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, hidden_size, dtype=dtype, device=device)
        self.act_1 = nn.SiLU()
        self.linear_2 = nn.Linear(hidden_size, hidden_size, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act_1(self.linear_1(x)))


class PatchEmbed(nn.Module):
    """Conv3d patchify (kernel = stride = patch): [B, C, T, H, W] -> tokens [B, T'*H'*W', hidden].

    Tokens are ordered t-major, then h, then w.
    """

    def __init__(self, patch_size: tuple[int, int, int], in_channels: int, hidden_size: int, dtype=None, device=None):
        super().__init__()
        self.proj = nn.Conv3d(
            in_channels, hidden_size, kernel_size=patch_size, stride=patch_size, dtype=dtype, device=device
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.to(self.proj.weight.dtype)).flatten(2).transpose(1, 2)


class FinalLayer(nn.Module):
    """adaLN (shift, scale) + LayerNorm + linear: image tokens [B, N, hidden] -> [B, N, patch_volume*out].

    ``linear`` may be kept in float32 inside a bf16 model (the reference builds it without dtype);
    its input is then cast to float32 and so is the output.
    """

    def __init__(
        self, hidden_size: int, patch_volume: int, out_channels: int, dtype=None, linear_dtype=None, device=None
    ):
        super().__init__()
        self.linear = nn.Linear(hidden_size, patch_volume * out_channels, dtype=linear_dtype, device=device)
        self.adaLN_modulation = nn.Sequential(
            nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, dtype=dtype, device=device)
        )

    def forward(self, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(vec).chunk(2, dim=1)
        x = modulate(layer_norm(x), shift, scale)
        return self.linear(x.to(self.linear.weight.dtype))
