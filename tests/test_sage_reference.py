"""The emulation of SageAttention2's quantization (gamecraft.model.sage_reference) and backend "sage" on CPU.

Expected values come from exact attention in float64, from the number formats' definitions (int8 steps,
e4m3 mantissa bits) and from the softmax's shift invariance; never from the emulation's own output.
"""

from __future__ import annotations

import math

import pytest
import torch

from gamecraft.model import GameCraftTransformer, PassInputs, TransformerConfig, init_random_
from gamecraft.model.attention import joint_attention, refiner_attention
from gamecraft.model.sage import sage_unavailable_reason
from gamecraft.model.sage_reference import (
    FP8_MAX,
    per_head_fp8_attention_reference,
    quantize_keys,
    quantize_queries,
    quantize_values,
    relative_l2,
    sage_attention_reference,
    to_e4m3,
    with_key_outliers,
)


def exact_attention(q, k, v):
    """softmax(q kᵀ / √D) v in float64; q, k, v [B, S, H, D]."""
    qh, kh, vh = (x.double().permute(0, 2, 1, 3) for x in (q, k, v))
    weights = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return (weights @ vh).permute(0, 2, 1, 3)


def qkv(shape, seed=0, logit_std=1.0, dtype=torch.float32):
    """Normal q, k, v whose logits q·k/√D have standard deviation ``logit_std``."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(*shape, generator=g) for _ in range(3))
    return (q * logit_std**0.5).to(dtype), (k * logit_std**0.5).to(dtype), v.to(dtype)


# -- exactness with the quantization switched off ------------------------------------------------------------
@pytest.mark.parametrize("tokens", [1, 77, 128, 300])  # below, at and across the 128-key blocks
def test_without_quantization_it_is_exact_attention(tokens):
    q, k, v = qkv((2, tokens, 3, 64), seed=tokens)
    got = sage_attention_reference(q, k, v, smooth_k=False, int8_qk=False, fp8_pv=False)
    assert got.dtype == torch.float32 and got.shape == q.shape
    assert (got.double() - exact_attention(q, k, v)).abs().max() < 1e-6


def test_smoothing_keys_alone_leaves_attention_unchanged():
    q, k, v = qkv((1, 300, 2, 64), seed=1)
    k = k + torch.linspace(-3, 3, 64)  # a channel offset shared by all tokens: the mean that smoothing removes
    got = sage_attention_reference(q, k, v, smooth_k=True, int8_qk=False, fp8_pv=False)
    assert (got.double() - exact_attention(q, k, v)).abs().max() < 2e-6


# -- the int8 and e4m3 steps ---------------------------------------------------------------------------------
@pytest.mark.parametrize("quantize", [quantize_queries, quantize_keys])
def test_int8_groups_round_within_half_a_step(quantize):
    x = torch.randn(2, 300, 3, 64, generator=torch.Generator().manual_seed(2)) * 5
    values, scale = quantize(x)
    assert values.shape == x.shape and scale.shape == x.shape[:3]
    assert torch.equal(values, values.round()) and values.abs().max() <= 127
    assert ((values * scale[..., None] - x).abs() <= scale[..., None] / 2 * (1 + 1e-6)).all()
    # each group's largest element maps to ±127: the scale is the group's amax / 127 (+1e-7)
    assert (values.abs().amax(dim=-1).amax(dim=1) == 127).all()


def test_int8_scale_groups_are_the_kernels_thread_groups():
    """A spike in one token changes the scales of exactly the tokens that share its group: for queries the
    rows r and r + 8 of its 16-row tile; for keys the 32 keys of its 128-block with the same (n mod 8) // 2."""
    x = torch.randn(1, 400, 1, 64, generator=torch.Generator().manual_seed(3))
    spiked = x.clone()
    spiked[0, 277, 0, 5] = 1000.0
    for quantize, expected in (
        (quantize_queries, {272 + 5, 272 + 13}),
        (quantize_keys, {n for n in range(256, 384) if (n % 8) // 2 == (277 % 8) // 2}),
    ):
        changed = (quantize(spiked)[1] != quantize(x)[1])[0, :, 0].nonzero().flatten().tolist()
        assert set(changed) == expected


def test_values_are_e4m3_per_channel():
    v = torch.randn(1, 200, 2, 16, generator=torch.Generator().manual_seed(4)) * torch.logspace(-3, 3, 16)
    values, scale = quantize_values(v)
    assert scale.shape == (1, 1, 2, 16)
    assert torch.allclose(scale, v.abs().amax(dim=1, keepdim=True) / FP8_MAX)
    assert torch.equal(values, values.to(torch.float8_e4m3fn).float())  # representable in e4m3
    assert values.abs().max() <= FP8_MAX
    normal = values.abs() >= 2.0**-6  # e4m3 normal range: 3 mantissa bits, relative error ≤ 2^-4
    assert ((values * scale - v).abs()[normal] <= (v.abs() * 2.0**-4)[normal] * (1 + 1e-6)).all()
    assert torch.equal(to_e4m3(torch.tensor([500.0, -1e9])), torch.tensor([448.0, -448.0]))  # saturates


# -- error against exact attention ---------------------------------------------------------------------------
def expected_error_range(logit_std: float) -> tuple[float, float]:
    """Relative L2 of out = Σ p v / Σ p when every p and v carries an independent relative rounding error.

    The error's and the output's squared norms have the same weights p²v², so their ratio is the mean squared
    relative error of p plus that of v (the P·V sum has no other error). e4m3 rounds to nearest with 3
    mantissa bits: the relative error is uniform within ± half an ulp, and half an ulp is 2^-5 to 2^-4 of the
    value, so each term's RMS lies in [2^-5/√3, 2^-4/√3]. int8 Q/K adds a logit error: a step of
    amax/127 (amax of 2·D or 32·D normal values, below 4.5 σ) has RMS step/√12, in q and in k, so the logit
    error is at most √2 · 4.5/127/√12 · logit_std, which becomes the same relative error in p.
    """
    fp8 = [2.0 * (2.0**-e / math.sqrt(3)) ** 2 for e in (5, 4)]
    int8 = math.sqrt(2) * 4.5 / 127 / math.sqrt(12) * logit_std
    return math.sqrt(fp8[0]), math.sqrt(fp8[1] + int8**2)


@pytest.mark.parametrize("logit_std", [1.0, 3.0])
def test_error_on_random_inputs_is_in_the_formats_range(logit_std):
    q, k, v = qkv((1, 512, 2, 128), seed=5, logit_std=logit_std, dtype=torch.bfloat16)
    error = relative_l2(sage_attention_reference(q, k, v), exact_attention(q, k, v))
    low, high = expected_error_range(logit_std)
    assert low < error < high, (low, error, high)


def test_each_formats_share_of_the_error_follows_its_rounding_model():
    """Finer than the range above, with one more assumption: mantissas spread smoothly within a binade.

    e4m3: a relative error uniform in ± half an ulp (2^-3 · 2^e / 2) of a value x in [2^e, 2^(e+1)) has mean
    square 2^-6/12 · E[2^2e / x²], and E[1/t²] over t in [1, 2) is 1/2 (uniform t) to 0.375/ln 2 (log-uniform t):
    per term an RMS of 0.0255–0.0265; P and V make two terms. int8: the logit error of per-group steps
    amax/127 (typical amax of n normal values: the 1 − 1/n quantile of |N(0, 1)|; 2·D values per query group,
    32·D per key group), RMS step/√12 in q and in k.
    """
    q, k, v = qkv((1, 512, 2, 128), seed=14, dtype=torch.bfloat16)
    exact = exact_attention(q, k, v)
    e4m3_term = [2.0**-3 * math.sqrt(mean_inverse_square / 12) for mean_inverse_square in (0.5, 0.375 / math.log(2))]
    fp8_only = relative_l2(sage_attention_reference(q, k, v, int8_qk=False), exact)
    assert 0.9 * math.sqrt(2) * e4m3_term[0] < fp8_only < 1.1 * math.sqrt(2) * e4m3_term[1]

    def typical_amax(n: int) -> float:
        return math.sqrt(2) * float(torch.erfinv(torch.tensor(1 - 1 / n, dtype=torch.float64)))

    steps = [typical_amax(n * 128) / 127 / math.sqrt(12) for n in (2, 32)]
    int8_only = relative_l2(sage_attention_reference(q, k, v, fp8_pv=False), exact)
    assert 0.8 * math.hypot(*steps) < int8_only < 1.2 * math.hypot(*steps)


def test_smoothing_keeps_the_error_when_keys_carry_channel_offsets():
    """Keys offset per channel (all tokens alike) with a few large channels: exact attention is unchanged,
    SageAttention's error stays where it was, while one scale per head (FA3's FP8) and int8 without
    smoothing lose precision to the offsets."""
    q, k, v = qkv((1, 512, 2, 128), seed=6, dtype=torch.bfloat16)
    outlier_k = with_key_outliers(k, torch.Generator().manual_seed(7), offset_std=2.0, large_offset=16.0)
    errors = {}
    for name, keys in (("plain", k), ("outliers", outlier_k)):
        exact = exact_attention(q, keys, v)
        errors[name] = dict(
            sage=relative_l2(sage_attention_reference(q, keys, v), exact),
            unsmoothed=relative_l2(sage_attention_reference(q, keys, v, smooth_k=False), exact),
            per_head=relative_l2(per_head_fp8_attention_reference(q, keys, v), exact),
        )
    plain, outliers = errors["plain"], errors["outliers"]
    assert outliers["sage"] < 1.05 * plain["sage"]
    assert outliers["unsmoothed"] > 1.3 * plain["unsmoothed"]
    assert outliers["per_head"] > 1.6 * plain["per_head"] and outliers["per_head"] > 2 * outliers["sage"]


def test_outlier_offsets_do_not_change_exact_attention():
    q, k, v = qkv((1, 200, 2, 64), seed=8)
    outlier_k = with_key_outliers(k, torch.Generator().manual_seed(9), offset_std=2.0, large_offset=16.0)
    assert (outlier_k - k).abs().max() > 10 * k.std()
    assert relative_l2(exact_attention(q, outlier_k, v), exact_attention(q, k, v)) < 1e-6


# -- backend "sage" on CPU -----------------------------------------------------------------------------------
def test_backend_sage_runs_the_reference_on_cpu_and_trims_text_padding_per_row():
    assert sage_unavailable_reason("cpu") is None
    img_len, text_len, lengths = 150, 20, [20, 7]
    q, k, v = qkv((2, img_len + text_len, 2, 32), seed=10)
    out = joint_attention(q, k, v, img_len, lengths, "sage").unflatten(2, (2, 32))
    for row, length in enumerate(lengths):
        split = img_len + length
        segments = [(0, split)] + ([(split, img_len + text_len)] if split < img_len + text_len else [])
        for start, stop in segments:  # each segment on its own: padding never reaches the image tokens
            part = slice(row, row + 1), slice(start, stop)
            want = sage_attention_reference(q[part], k[part], v[part])
            torch.testing.assert_close(out[part], want, rtol=0, atol=0)
    assert relative_l2(out, joint_attention(q, k, v, img_len, lengths, "sdpa").unflatten(2, (2, 32))) > 1e-3


def test_refiner_keeps_exact_attention_with_sage():
    q, k, v = qkv((2, 24, 2, 16), seed=11)
    torch.testing.assert_close(
        refiner_attention(q, k, v, [24, 9], "sage"), refiner_attention(q, k, v, [24, 9], "sdpa"), rtol=0, atol=0
    )


def test_sage_unavailable_reason_names_what_is_missing(monkeypatch):
    assert "no SageAttention kernel" in sage_unavailable_reason("meta")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert sage_unavailable_reason("cuda") == "CUDA is not available"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert "needs compute capability 9.0" in sage_unavailable_reason("cuda")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    try:
        import sageattention  # noqa: F401
    except ImportError:
        assert "sageattention package does not import" in sage_unavailable_reason("cuda")
    else:  # a machine with the package (the GPU image): the kernel's own import decides
        pytest.skip("sageattention is installed here")


@torch.no_grad()
def test_padded_text_never_reaches_the_image_with_sage():
    """Whole tiny model with backend "sage": changing the padded text tokens changes nothing else (their
    tokens are attended only among themselves, and the image segment's K mean and scales exclude them)."""
    config = TransformerConfig.tiny()
    model = init_random_(GameCraftTransformer(config, dtype=torch.float32, device="meta"), seed=7).eval()
    g = torch.Generator().manual_seed(13)
    lengths, text_len = [4, 9], 12
    inputs = dict(
        x=torch.randn(2, config.img_in_channels, 10, 4, 6, generator=g),
        t=torch.tensor([900.0, 500.0]),
        text_states=torch.randn(2, text_len, config.text_states_dim, generator=g),
        text_mask=torch.stack([(torch.arange(text_len) < n).long() for n in lengths]),
        text_states_2=torch.randn(2, config.text_states_dim_2, generator=g),
        cam_latents=torch.randn(2, 33, 6, 32, 48, generator=g),
    )
    changed = dict(inputs, text_states=inputs["text_states"].clone())
    for row, n in enumerate(lengths):
        changed["text_states"][row, n:] = 100.0 * torch.randn(text_len - n, config.text_states_dim, generator=g)
    sage = model(PassInputs(**inputs, attention_backend="sage"))
    torch.testing.assert_close(model(PassInputs(**changed, attention_backend="sage")), sage, rtol=0, atol=1e-6)
    exact = model(PassInputs(**inputs, attention_backend="sdpa"))
    assert relative_l2(sage, exact) > 1e-4  # the backend ran (quantized), and stayed close
    assert relative_l2(sage, exact) < 0.2
