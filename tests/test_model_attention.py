"""Attention semantics: mask-free segment attention equals the reference's masked/varlen attention."""

from __future__ import annotations

import math

import pytest
import torch

from gamecraft.model import (
    GameCraftTransformer,
    PassInputs,
    StepCache,
    TransformerConfig,
    init_random_,
    text_lengths_from_mask,
)
from gamecraft.model.attention import joint_attention, refiner_attention


def _masked_attention(q, k, v, allowed):
    """Naive softmax attention; q,k,v [B, L, H, D], allowed [B, L(query), L(key)] bool."""
    scores = torch.einsum("bqhd,bkhd->bhqk", q.double(), k.double()) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v.double()).flatten(2)


def _qkv(batch, length, heads=3, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, length, heads, dim, generator=g, dtype=torch.float64) for _ in range(3)]


@pytest.mark.parametrize("backend", ["sdpa", "sdpa-math"])
def test_joint_attention_equals_cu_seqlens_segments(backend):
    img_len, text_len, lengths = 7, 5, [0, 2, 5, 2]
    q, k, v = _qkv(len(lengths), img_len + text_len)
    # The reference's cu_seqlens per row: segment 0 = [img + n_b], segment 1 = the padding.
    segment = torch.stack([(torch.arange(img_len + text_len) >= img_len + n).long() for n in lengths])
    allowed = segment[:, :, None] == segment[:, None, :]
    expected = _masked_attention(q, k, v, allowed)
    actual = joint_attention(q, k, v, img_len, lengths, backend)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


def test_refiner_attention_equals_reference_mask():
    text_len, lengths = 6, [3, 0, 6, 1]
    q, k, v = _qkv(len(lengths), text_len, seed=1)
    valid = torch.stack([torch.arange(text_len) < n for n in lengths])
    allowed = valid[:, :, None] & valid[:, None, :]  # the reference's mask_1 & mask_2 ...
    allowed[:, :, 0] = True  # ... with key 0 always allowed
    expected = _masked_attention(q, k, v, allowed)
    torch.testing.assert_close(refiner_attention(q, k, v, lengths, "sdpa"), expected, rtol=1e-10, atol=1e-10)


def test_unknown_backend_and_bad_lengths_raise():
    q, k, v = _qkv(1, 4)
    with pytest.raises(ValueError, match="text length"):
        joint_attention(q, k, v, 2, [3], "sdpa")
    model = GameCraftTransformer(TransformerConfig.tiny(), dtype=torch.float32, device="meta")
    with pytest.raises(ValueError, match="unknown attention backend"):
        model(
            PassInputs(
                x=torch.zeros(1, 33, 10, 4, 6),
                t=torch.zeros(1),
                text_states=torch.zeros(1, 4, 64),
                text_mask=torch.ones(1, 4),
                text_states_2=torch.zeros(1, 32),
                attention_backend="flash-typo",
            )
        )


def test_text_lengths_from_mask():
    assert text_lengths_from_mask(torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]])) == [2, 4, 0]
    with pytest.raises(ValueError, match="right-padded"):
        text_lengths_from_mask(torch.tensor([[0, 1, 1, 0]]))


# ----------------------------------------------------------------------------------------------
# Whole-model semantics on a tiny random model
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
    config = TransformerConfig.tiny()
    return init_random_(GameCraftTransformer(config, dtype=torch.float32, device="meta"), seed=7).eval()


def _inputs(config, lengths, text_len=12, frames=10, seed=3):
    g = torch.Generator().manual_seed(seed)
    batch = len(lengths)
    mask = torch.stack([(torch.arange(text_len) < n).long() for n in lengths])
    return dict(
        x=torch.randn(batch, config.img_in_channels, frames, 4, 6, generator=g),
        t=torch.tensor([900.0, 500.0, 100.0][:batch]),
        text_states=torch.randn(batch, text_len, config.text_states_dim, generator=g),
        text_mask=mask,
        text_states_2=torch.randn(batch, config.text_states_dim_2, generator=g),
        cam_latents=torch.randn(batch, 33, 6, 32, 48, generator=g),
    )


@torch.no_grad()
def test_padded_text_values_do_not_change_image_outputs(tiny_model):
    lengths = [4, 9]
    inputs = _inputs(tiny_model.config, lengths, frames=18)
    changed = dict(inputs, text_states=inputs["text_states"].clone())
    for row, n in enumerate(lengths):
        changed["text_states"][row, n:] = 100.0 * torch.randn_like(changed["text_states"][row, n:])
    cache_a, cache_b = StepCache(), StepCache()
    out_a = tiny_model(PassInputs(**inputs, cache=cache_a))
    out_b = tiny_model(PassInputs(**changed, cache=cache_b))
    torch.testing.assert_close(out_b, out_a, rtol=0, atol=1e-6)
    img_len = 18 * 2 * 3
    for row, n in enumerate(lengths):  # image and valid text features are untouched, padding is not
        torch.testing.assert_close(
            cache_b.features[row, : img_len + n], cache_a.features[row, : img_len + n], rtol=0, atol=1e-6
        )
        assert not torch.allclose(cache_b.features[row, img_len + n :], cache_a.features[row, img_len + n :])


@torch.no_grad()
@pytest.mark.parametrize("frames", [10, 18])
def test_rows_with_different_text_lengths_equal_each_row_alone(tiny_model, frames):
    lengths = [3, 12, 7]
    inputs = _inputs(tiny_model.config, lengths, frames=frames)
    batched = tiny_model(PassInputs(**inputs))
    for row in range(len(lengths)):
        alone = tiny_model(PassInputs(**{k: v[row : row + 1] for k, v in inputs.items()}))
        torch.testing.assert_close(batched[row : row + 1], alone, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_sdpa_and_math_backends_agree(tiny_model):
    inputs = _inputs(tiny_model.config, [5, 12])
    torch.testing.assert_close(
        tiny_model(PassInputs(**inputs, attention_backend="sdpa")),
        tiny_model(PassInputs(**inputs, attention_backend="sdpa-math")),
        rtol=1e-5,
        atol=1e-5,
    )
