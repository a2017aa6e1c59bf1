"""SageAttention2's Hopper quantization, emulated with plain torch (float32 arithmetic).

What is emulated: ``sageattn_qk_int8_pv_fp8_cuda_sm90`` of thu-ml/SageAttention (pinned commit
``d1a57a546c3d395b1ffcbeecc66d81db76f3b4b5``, version 2.2.0) as ``sageattn()`` calls it on sm90:
``qk_quant_gran="per_thread"``, ``pv_accum_dtype="fp32+fp32"``, ``smooth_k=True``, no ``smooth_v``.
Read from its ``core.py``, ``triton/quant_per_thread.py``, ``quant.py``, ``csrc/fused/fused.cu`` and
``csrc/qattn/qk_int_sv_f8_cuda_sm90.cu`` / ``attn_utils.cuh`` (nothing is copied from them):

1. K smoothing: ``k - mean_tokens(k)`` per (row, head, channel), in k's dtype. It shifts every logit of
   a query by the same amount (q·mean), which the softmax ignores, and removes the channel offsets
   that would otherwise set the int8 scales.
2. Q, K → int8, symmetric, ``scale = amax / 127 + 1e-7``, round half away from zero. Groups follow the
   kernel's MMA fragments: Q tokens ``16w + r`` and ``16w + r + 8`` (r < 8) share a scale (one per
   thread row pair); in each block of 128 keys, the 32 keys with the same ``(n mod 8) // 2`` share one.
3. V → e4m3 per channel over all tokens: ``scale = amax / 448``; the scale is applied to the output.
4. Q·Kᵀ in exact integer arithmetic, dequantised in float32 with ``sm_scale · log2(e)``; online
   softmax over blocks of 128 keys in base 2, with the running max lowered by 8.807 = log2(448) so that
   P = 2^(s - m) spans e4m3's range [0, 448]. P goes to e4m3 for the P·V product; the softmax
   denominator sums the float32 P.
5. Two-level accumulation: each 128-key block's P·V is summed on its own (tensor core, float32 output)
   and then added to a float32 running output. Here both levels are float32; Hopper's fp8 MMA keeps
   ≈ 22 mantissa bits inside a block, a difference of ~1e-4 relative, far below the fp8 error (~4e-2).

All tensors are "NHD": [B, S, H, D] (batch, tokens, heads, head_dim), like the model's q/k/v. Values
are unitless activations; logits are in natural-log units until step 4 converts them to log2 units.
The same functions run on CPU tensors (tests, tiny models) and GPU tensors (benchmark comparisons).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG2E = 1.44269504  # the kernel's float constant
P_OFFSET = 8.807  # log2(448): headroom that puts the largest P of a block at e4m3's maximum
INT8_MAX = 127.0
INT8_EPS = 1e-7  # added to every int8 scale (so an all-zero group does not divide by zero)
FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448
Q_TILE = 16  # query rows per warp tile; rows r and r + 8 of a tile share a scale
K_BLOCK = 128  # keys per softmax/accumulation step and per key-scale block (4 groups in each)
_NEG = -5.0e6  # the kernel's "minus infinity" for the running max


def to_e4m3(x: torch.Tensor) -> torch.Tensor:
    """Round to float8 e4m3 (nearest even) with saturation at ±448, returned as float32 values.

    torch's cast turns values ≥ 464 into NaN; the kernel's ``cvt.rn.satfinite`` saturates, hence the clamp.
    """
    return x.float().clamp(-FP8_MAX, FP8_MAX).to(FP8).float()


def round_half_away(x: torch.Tensor) -> torch.Tensor:
    """Triton's int8 rounding: add ±0.5, truncate toward zero."""
    return torch.trunc(x + torch.where(x >= 0, 0.5, -0.5))


def smooth_keys(k: torch.Tensor) -> torch.Tensor:
    """k [B, S, H, D] minus its mean over the tokens, in k's dtype (the kernel subtracts in bf16)."""
    return k - k.mean(dim=1, keepdim=True)


def _pad_tokens(x: torch.Tensor, multiple: int) -> torch.Tensor:
    extra = -x.shape[1] % multiple
    return F.pad(x.float(), (0, 0, 0, 0, 0, extra))  # missing tokens read as zeros, as the masked loads


def quantize_queries(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-thread int8 of q [B, S, H, D]: (integer values as float32 [B, S, H, D], scale per token
    [B, S, H] float32), ``q ≈ values · scale``. Tokens ``16w + r`` and ``16w + r + 8`` share a scale."""
    batch, tokens, heads, dim = q.shape
    x = _pad_tokens(q, Q_TILE)
    groups = x.view(batch, -1, 2, Q_TILE // 2, heads, dim)  # token = 16 w + 8 half + r
    scale = groups.abs().amax(dim=(2, 5), keepdim=True) / INT8_MAX + INT8_EPS
    values = round_half_away(groups / scale).view(x.shape)[:, :tokens]
    return values, scale.expand(-1, -1, 2, -1, -1, 1).reshape(batch, -1, heads)[:, :tokens]


def quantize_keys(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-thread int8 of (smoothed) k [B, S, H, D]: (values [B, S, H, D], scale per token [B, S, H]).
    In block b of 128 keys, key ``128 b + 8 i + 2 t + j`` (i < 16, t < 4, j < 2) is in group (b, t)."""
    batch, tokens, heads, dim = k.shape
    x = _pad_tokens(k, K_BLOCK)
    groups = x.view(batch, -1, K_BLOCK // 8, 4, 2, heads, dim)
    scale = groups.abs().amax(dim=(2, 4, 6), keepdim=True) / INT8_MAX + INT8_EPS
    values = round_half_away(groups / scale).view(x.shape)[:, :tokens]
    return values, scale.expand(-1, -1, K_BLOCK // 8, -1, 2, -1, 1).reshape(batch, -1, heads)[:, :tokens]


def quantize_values(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """e4m3 of v [B, S, H, D] with one scale per (row, head, channel) over all tokens:
    (e4m3 values as float32 [B, S, H, D], scale [B, 1, H, D]), ``v ≈ values · scale``.

    An all-zero channel gets scale 0 and values 0 here; the kernel would compute 0 · (448 / 0) = NaN.
    """
    amax = v.float().abs().amax(dim=1, keepdim=True)
    inverse = torch.where(amax > 0, FP8_MAX / amax, torch.zeros_like(amax))  # the kernel multiplies by 448/amax
    return to_e4m3(v.float() * inverse), amax / FP8_MAX


def quantized_attention(
    q: torch.Tensor,
    q_scale: torch.Tensor,
    k: torch.Tensor,
    k_scale: torch.Tensor,
    v: torch.Tensor,
    v_scale: torch.Tensor,
    sm_scale: float,
    fp8_p: bool = True,
) -> torch.Tensor:
    """The kernel's main loop on quantized operands.

    q [B, Sq, H, D] with q_scale [B, Sq, H]; k [B, Sk, H, D] with k_scale [B, Sk, H]; v [B, Sk, H, D] with
    v_scale broadcastable to [B, 1, H, D] (each ``x ≈ values · scale``; ones for unquantized operands).
    ``sm_scale``: the softmax scale in natural-log units (1/√D). ``fp8_p``: round P to e4m3 before P·V.
    Returns the attention output [B, Sq, H, D] float32. Query rows are independent, so any subset of
    the rows of q (with their scales) gives the same rows of the output.
    """
    qh, kh, vh = (x.float().permute(0, 2, 1, 3) for x in (q, k, v))  # [B, H, S, D]
    q_s = q_scale.float().permute(0, 2, 1).unsqueeze(-1)  # [B, H, Sq, 1]
    k_s = k_scale.float().permute(0, 2, 1).unsqueeze(-2)  # [B, H, 1, Sk]
    base = torch.tensor(sm_scale, dtype=torch.float32) * LOG2E  # float32 as in the kernel
    batch, heads, queries, _ = qh.shape
    m = torch.full((batch, heads, queries, 1), _NEG, device=qh.device)  # running max, log2 units
    d = torch.zeros_like(m)  # softmax denominator (float32 P)
    out = torch.zeros(batch, heads, queries, vh.shape[-1], device=qh.device)
    for start in range(0, kh.shape[2], K_BLOCK):
        stop = min(start + K_BLOCK, kh.shape[2])  # the kernel masks keys past the end: they add nothing
        s = qh @ kh[:, :, start:stop].transpose(-1, -2)  # int8 values: integer sums < 2^24, exact in float32
        s = s * (base * (q_s * k_s[..., start:stop]))  # log2 units
        m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True) - P_OFFSET)
        alpha = torch.exp2(m - m_new)
        p = torch.exp2(s - m_new)
        d = d * alpha + p.sum(dim=-1, keepdim=True)
        if fp8_p:  # p ≤ 2^8.807 < 464 by construction, so the plain cast cannot overflow to NaN
            p = p.to(FP8).float()
        out = out * alpha + p @ vh[:, :, start:stop]  # one block's sum, then the float32 running sum
        m = m_new
    out = out / d * v_scale.float().permute(0, 2, 1, 3)
    return out.permute(0, 2, 1, 3)


def sage_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    sm_scale: float | None = None,
    smooth_k: bool = True,
    int8_qk: bool = True,
    fp8_pv: bool = True,
) -> torch.Tensor:
    """Non-causal attention of q, k, v [B, S, H, D] with SageAttention2's sm90 numerics.

    The switches turn single steps off (all off: exact attention in float32, up to rounding order).
    Returns [B, Sq, H, D] in q's dtype (the kernel writes its input dtype).
    """
    sm_scale = q.shape[-1] ** -0.5 if sm_scale is None else sm_scale
    dtype = q.dtype
    if smooth_k:
        k = smooth_keys(k)
    if int8_qk:
        (q, q_scale), (k, k_scale) = quantize_queries(q), quantize_keys(k)
    else:
        q_scale, k_scale = q.new_ones(q.shape[:3]), k.new_ones(k.shape[:3])
    if fp8_pv:
        v, v_scale = quantize_values(v)
    else:
        v_scale = v.new_ones((v.shape[0], 1, *v.shape[2:]))
    out = quantized_attention(q, q_scale, k, k_scale, v, v_scale, sm_scale, fp8_p=fp8_pv)
    return out.to(dtype)


def quantize_per_head_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """e4m3 of x [B, S, H, D] with one scale per (row, head): (values [B, S, H, D], scale [B, 1, H, 1])."""
    amax = x.float().abs().amax(dim=(1, 3), keepdim=True)
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    return to_e4m3(x.float() / scale), scale


def per_head_fp8_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sm_scale: float | None = None
) -> torch.Tensor:
    """The granularity of FlashAttention-3's FP8 mode (one descale per head for q, k and v, no
    smoothing), with the same e4m3 P and accumulation as :func:`sage_attention_reference` so that a
    comparison isolates the Q/K/V scaling. An emulation of the scheme, not of FA3's kernel.
    q, k, v [B, S, H, D]; returns [B, Sq, H, D] in q's dtype."""
    sm_scale = q.shape[-1] ** -0.5 if sm_scale is None else sm_scale
    (q8, q_scale), (k8, k_scale), (v8, v_scale) = (quantize_per_head_fp8(x) for x in (q, k, v))
    out = quantized_attention(
        q8,
        q_scale.expand(-1, q.shape[1], -1, -1)[..., 0],
        k8,
        k_scale.expand(-1, k.shape[1], -1, -1)[..., 0],
        v8,
        v_scale,
        sm_scale,
    )
    return out.to(q.dtype)


def with_key_outliers(
    k: torch.Tensor,
    generator: torch.Generator,
    offset_std: float = 1.0,
    large_channels: int = 4,
    large_offset: float = 8.0,
) -> torch.Tensor:
    """k [B, S, H, D] plus what real DiT keys carry and random ones lack: a per-(head, channel) offset shared
    by all tokens (normal, ``offset_std`` times k's standard deviation) and ``large_channels`` channels per
    head offset by ±``large_offset`` times that deviation. Each query's logits shift by a constant, so exact
    attention is unchanged (softmax invariance) while per-tensor scales see a much larger range.
    ``generator`` lives on the CPU; the result has k's dtype and device."""
    _, _, heads, dim = k.shape
    std = float(k.float().std())
    offset = torch.randn(heads, dim, generator=generator) * offset_std
    for head in range(heads):
        channels = torch.randperm(dim, generator=generator)[:large_channels]
        signs = torch.randint(0, 2, (large_channels,), generator=generator) * 2.0 - 1.0
        offset[head, channels] = signs * large_offset
    return (k.float() + (offset * std).to(k.device)).to(k.dtype)


def relative_l2(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """‖actual − expected‖ / ‖expected‖ over all elements, in float64."""
    diff = (actual.double() - expected.double()).norm()
    return float(diff / expected.double().norm().clamp_min(math.ulp(0.0)))
