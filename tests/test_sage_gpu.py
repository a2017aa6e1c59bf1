"""SageAttention2's sm90 kernel against the emulation of its scheme, on the GPU (H100/H200 + sageattention).

Skipped unless backend "sage" can run on ``cuda`` (compute capability 9.0 and the package with its sm90
extension). The emulation (gamecraft.model.sage_reference) runs on the same GPU tensors; the kernel must
match it far more closely than either matches exact attention (≈ 0.04 relative L2): what remains is the
kernel's approximate exp2 and division, its ≈ 22-bit accumulation inside a 128-key block and output rounding.

    python -m pytest tests/test_sage_gpu.py -v -s      # -s prints the measured errors
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gamecraft.model.attention import joint_attention
from gamecraft.model.sage import sage_attention, sage_unavailable_reason
from gamecraft.model.sage_reference import relative_l2, sage_attention_reference, with_key_outliers

REASON = sage_unavailable_reason("cuda")
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"backend 'sage' unavailable: {REASON}")

KERNEL_VS_EMULATION = 0.01  # relative L2 allowed between the kernel and the emulation of its scheme


def exact(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Attention in float32 with float32 accumulation (PyTorch's math kernel); [B, S, H, D] in and out."""
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        out = F.scaled_dot_product_attention(*(x.float().transpose(1, 2) for x in (q, k, v)))
    return out.transpose(1, 2)


def inputs(batch: int, tokens: int, heads: int, seed: int, logit_std: float = 1.5):
    g = torch.Generator(device="cuda").manual_seed(seed)
    q, k, v = (torch.randn(batch, tokens, heads, 128, device="cuda", generator=g) for _ in range(3))
    return (q * logit_std**0.5).bfloat16(), (k * logit_std**0.5).bfloat16(), v.bfloat16()


@pytest.fixture(autouse=True)
def _no_tf32():
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # the exact reference must be float32
    yield
    torch.backends.cuda.matmul.allow_tf32 = previous


# Token counts: tiny and odd ones; 4188 = 4096 + 32 + 60 and 2336 = 2048 + 32 + 256 are the residues of the
# image segments 60,192 + 60 text and 33,440 + 256 text modulo the kernel's 64-query and 128-key blocks;
# 196 is a padded-text segment (256 − 60).
@pytest.mark.parametrize(
    "batch, tokens, heads",
    [(1, 1, 4), (1, 77, 4), (2, 129, 4), (1, 196, 24), (1, 1000, 24), (1, 2336, 4), (1, 4188, 4), (2, 3000, 8)],
)
def test_kernel_matches_the_emulation(batch, tokens, heads):
    q, k, v = inputs(batch, tokens, heads, seed=tokens)
    kernel = sage_attention(q, k, v)
    assert kernel.shape == q.shape and kernel.dtype == torch.bfloat16 and torch.isfinite(kernel).all()
    emulated = sage_attention_reference(q, k, v)
    want = exact(q, k, v)
    gap, kernel_error = relative_l2(kernel, emulated), relative_l2(kernel, want)
    emulated_error = relative_l2(emulated, want)
    print(
        f"\n{batch}x{tokens}x{heads}: kernel vs emulation {gap:.5f}; vs exact: kernel {kernel_error:.4f}, "
        f"emulation {emulated_error:.4f}"
    )
    assert gap < KERNEL_VS_EMULATION
    assert abs(kernel_error - emulated_error) < 0.1 * emulated_error + 1e-3
    assert kernel_error < 0.06


def test_strided_views_give_the_same_bits():
    """The model passes segment slices of [img ; text] and Ulysses receive-buffer views, not fresh tensors."""
    q, k, v = inputs(1, 1100, 8, seed=1)
    split = 1000
    packed = torch.stack((q, k, v), dim=0).permute(1, 2, 0, 3, 4).contiguous().permute(2, 0, 1, 3, 4)  # [3, B, S, H, D]
    assert not packed[0].is_contiguous()
    whole = sage_attention(q[:, :split].contiguous(), k[:, :split].contiguous(), v[:, :split].contiguous())
    assert torch.equal(sage_attention(q[:, :split], k[:, :split], v[:, :split]), whole)
    assert torch.equal(sage_attention(packed[0][:, :split], packed[1][:, :split], packed[2][:, :split]), whole)


def test_channel_outliers_in_keys_leave_the_kernels_error_unchanged():
    q, k, v = inputs(1, 4188, 8, seed=2)
    outlier_k = with_key_outliers(k, torch.Generator().manual_seed(3), offset_std=2.0, large_offset=16.0)
    errors = {}
    for name, keys in (("plain", k), ("outliers", outlier_k)):
        kernel = sage_attention(q, keys, v)
        errors[name] = relative_l2(kernel, exact(q, keys, v))
        assert relative_l2(kernel, sage_attention_reference(q, keys, v)) < KERNEL_VS_EMULATION
    print(f"\nkernel vs exact: plain keys {errors['plain']:.4f}, keys with channel outliers {errors['outliers']:.4f}")
    assert errors["outliers"] < 1.1 * errors["plain"]


def test_joint_attention_trims_text_padding_per_row():
    """Backend "sage" through the model's segment attention: each row's [image + valid text] and [padding]
    segments are separate kernel calls, exactly as the exact backends."""
    img_len, text_len, lengths = 1500, 256, [60, 256]
    q, k, v = inputs(2, img_len + text_len, 8, seed=4)
    out = joint_attention(q, k, v, img_len, lengths, "sage").unflatten(2, (8, 128))
    for row, length in enumerate(lengths):
        split = img_len + length
        for start, stop in [(0, split)] + ([(split, img_len + text_len)] if split < img_len + text_len else []):
            part = slice(row, row + 1), slice(start, stop)
            assert torch.equal(out[part], sage_attention(q[part], k[part], v[part]))
