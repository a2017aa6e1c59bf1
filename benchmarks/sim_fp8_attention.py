"""How much error 8-bit attention adds, emulated on the CPU (why ``go_fast`` keeps bf16 attention).

FlashAttention-3's FP8 mode quantizes q, k, v to e4m3 (one scale per head) and the probabilities P to
e4m3 before the PV product. SageAttention2 instead quantizes q, k to int8 per token block (k smoothed
by subtracting its mean over tokens, which leaves the softmax unchanged) and keeps the FP8 PV. This
script emulates both with PyTorch's float8 dtype and rounding, in float64 otherwise, for one attention
call over random q, k, v whose logits have a given standard deviation, and reports the relative L2 error
against exact float64 attention. The bf16-input row is the rounding floor of the exact kernels.

    python benchmarks/sim_fp8_attention.py --out /tmp/fp8sim

It needs no GPU: the error is a property of the number formats, not of a kernel.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)


def fp8_per_head(x: torch.Tensor) -> torch.Tensor:
    """e4m3 round trip of x [H, N, D] with one scale per head (FA3's descale granularity)."""
    scale = x.abs().amax(dim=(1, 2), keepdim=True) / FP8_MAX
    return (x / scale).to(FP8).to(x.dtype) * scale


def int8_per_block(x: torch.Tensor, block: int) -> torch.Tensor:
    """Symmetric int8 round trip of x [H, N, D] with one scale per block of ``block`` tokens."""
    heads, tokens, dim = x.shape
    blocks = x.view(heads, tokens // block, block, dim)
    scale = blocks.abs().amax(dim=(2, 3), keepdim=True) / 127.0
    return ((blocks / scale).round().clamp(-127, 127) * scale).view(heads, tokens, dim)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, qk: str = "exact", pv: str = "exact") -> torch.Tensor:
    """softmax(q kᵀ / √D) v over [H, N, D] with the chosen emulated formats (P normalised in full precision)."""
    if qk == "fp8":
        q, k = fp8_per_head(q), fp8_per_head(k)
    elif qk == "int8":
        k = k - k.mean(dim=1, keepdim=True)  # SageAttention's smoothing: a per-query constant in the logits
        q, k = int8_per_block(q, 128), int8_per_block(k, 64)
    elif qk == "bf16":
        q, k = q.bfloat16().to(q.dtype), k.bfloat16().to(k.dtype)
    if pv == "fp8":
        v = fp8_per_head(v)
    elif pv == "bf16":
        v = v.bfloat16().to(v.dtype)
    logits = q @ k.transpose(1, 2) / q.shape[-1] ** 0.5
    p = torch.exp(logits - logits.amax(dim=-1, keepdim=True))
    total = p.sum(dim=-1, keepdim=True)
    if pv == "fp8":
        p = p.to(FP8).to(p.dtype)  # P in [0, 1] goes into the e4m3 PV product unscaled
    elif pv == "bf16":
        p = p.bfloat16().to(p.dtype)
    return (p @ v) / total


VARIANTS = (
    ("bf16 inputs (exact kernels' floor)", "bf16", "bf16"),
    ("FA3 FP8: e4m3 q/k/v per head + e4m3 P", "fp8", "fp8"),
    ("e4m3 q/k only", "fp8", "exact"),
    ("e4m3 v and P only", "exact", "fp8"),
    ("SageAttention2-style: int8 q/k per block, smoothed k, e4m3 v and P", "int8", "fp8"),
)


def simulate(heads: int, tokens: int, dim: int, logit_stds: list[float], seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for std in logit_stds:
        # per-element std √std makes q·k/√D have standard deviation `std`
        q, k, v = (torch.randn(heads, tokens, dim, generator=g, dtype=torch.float64) for _ in range(3))
        q, k = q * std**0.5, k * std**0.5
        exact = attention(q, k, v)
        for name, qk, pv in VARIANTS:
            out = attention(q, k, v, qk, pv)
            rows.append(dict(logit_std=std, variant=name, rel_l2=round(float((out - exact).norm() / exact.norm()), 4)))
            print(rows[-1], flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--logit-stds", type=float, nargs="+", default=[1.0, 4.0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = simulate(args.heads, args.tokens, args.dim, args.logit_stds, args.seed)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "sim_fp8_attention.json").write_text(
            json.dumps(dict(args=vars(args) | {"out": str(args.out)}, rows=rows), indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
