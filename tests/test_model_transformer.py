"""Transformer behaviour beyond the goldens: step cache, camera tokens, RoPE default, unpatchify, config."""

from __future__ import annotations

import json

import pytest
import torch
from einops import rearrange

from gamecraft.model import GameCraftTransformer, PassInputs, StepCache, TransformerConfig, init_random_, rope_tables
from gamecraft.model.cameranet import compress_time


@pytest.fixture(scope="module")
def tiny_model():
    return init_random_(
        GameCraftTransformer(TransformerConfig.tiny(), dtype=torch.float32, device="meta"), seed=11
    ).eval()


def _inputs(config, frames=18, batch=2, seed=5):
    g = torch.Generator().manual_seed(seed)
    return dict(
        x=torch.randn(batch, config.img_in_channels, frames, 4, 6, generator=g),
        t=torch.tensor([987.0, 987.0])[:batch],
        text_states=torch.randn(batch, 10, config.text_states_dim, generator=g),
        text_mask=torch.tensor([[1] * 3 + [0] * 7, [1] * 8 + [0] * 2])[:batch],
        text_states_2=torch.randn(batch, config.text_states_dim_2, generator=g),
        cam_latents=torch.randn(batch, 33, 6, 32, 48, generator=g),
    )


@torch.no_grad()
def test_step_cache_reuses_features_and_ignores_new_latents(tiny_model):
    inputs = _inputs(tiny_model.config)
    cache = StepCache()
    tiny_model(PassInputs(**inputs, cache=cache))
    assert cache.features is not None and cache.features.shape == (2, 18 * 6 + 10, tiny_model.config.hidden_size)
    stored = cache.features.clone()
    t2 = torch.tensor([946.0, 946.0])
    cached = tiny_model(PassInputs(**inputs | {"t": t2}, cache=cache, use_cache=True))
    other_x = tiny_model(
        PassInputs(**inputs | {"t": t2, "x": torch.randn_like(inputs["x"])}, cache=cache, use_cache=True)
    )
    torch.testing.assert_close(other_x, cached, rtol=0, atol=0)
    assert torch.equal(cache.features, stored), "a cached pass must not overwrite the cache"
    # The new timestep still acts (through vec) and the result differs from a full pass.
    assert not torch.allclose(cached, tiny_model(PassInputs(**inputs, cache=cache, use_cache=True)))
    assert not torch.allclose(cached, tiny_model(PassInputs(**inputs | {"t": t2})))


def test_step_cache_errors(tiny_model):
    inputs = _inputs(tiny_model.config)
    with pytest.raises(ValueError, match="StepCache"):
        tiny_model(PassInputs(**inputs, use_cache=True))
    cache = StepCache(features=torch.zeros(2, 5, tiny_model.config.hidden_size))
    with pytest.raises(ValueError, match="do not fit"):
        tiny_model(PassInputs(**inputs, cache=cache, use_cache=True))


@torch.no_grad()
@pytest.mark.parametrize("frames", [10, 18])
def test_precomputed_camera_tokens_and_rope_equal_the_defaults(tiny_model, frames):
    inputs = _inputs(tiny_model.config, frames=frames)
    reference = tiny_model(PassInputs(**inputs))
    cam = inputs.pop("cam_latents")
    tokens = tiny_model.camera_tokens(cam, frames)
    assert tokens.shape == (2, frames * 6, tiny_model.config.hidden_size)
    # The conditioning frames carry the zero-camera tokens, identical for every row.
    zero_part = tokens[:, : (frames - 9) * 6]
    torch.testing.assert_close(zero_part[0], zero_part[1], rtol=0, atol=0)
    rope = rope_tables(frames, 4, 6, tiny_model.config)
    out = tiny_model(PassInputs(**inputs, camera_tokens=tokens, rope=rope, text_lengths=[3, 8]))
    torch.testing.assert_close(out, reference, rtol=0, atol=0)


def test_camera_tokens_reject_unknown_frame_counts(tiny_model):
    with pytest.raises(ValueError, match="latent frames"):
        tiny_model.camera_tokens(torch.zeros(1, 33, 6, 32, 48), 12)
    with pytest.raises(ValueError, match="34/66"):
        compress_time(torch.zeros(34, 4, 2, 2), batch=1)


def test_compress_time_rule():
    frames = torch.arange(33.0).reshape(33, 1, 1, 1)
    out = compress_time(frames, batch=1).flatten()
    assert out.tolist() == [0.0] + [1.5 + 2 * i for i in range(16)]
    assert compress_time(torch.arange(4.0).reshape(4, 1, 1, 1), batch=1).flatten().tolist() == [0.5, 2.5]


def test_unpatchify_inverts_patchify(tiny_model):
    config = tiny_model.config
    video = torch.randn(2, config.out_channels, 5, 4, 6)
    pt, ph, pw = config.patch_size
    patches = rearrange(video, "b c (t pt) (h ph) (w pw) -> b (t h w) (c pt ph pw)", pt=pt, ph=ph, pw=pw)
    assert torch.equal(tiny_model.unpatchify(patches, (5, 2, 3)), video)


def test_config_from_golden_and_rejections(golden_dir):
    golden = json.loads((golden_dir / "transformer.json").read_text())["config"]
    config = TransformerConfig.from_golden(golden)
    assert config.hidden_size == golden["hidden_size"] and config.num_heads == golden["num_heads"]
    assert config.rope_dim_list == tuple(golden["rope_dim_list"])
    assert config.img_in_channels == golden["img_in_input_channels"]
    for key, bad in [
        ("guidance_embed", True),
        ("qk_norm_type", "layer"),
        ("text_projection", "linear"),
        ("mlp_act_type", "gelu"),
    ]:
        with pytest.raises(ValueError):
            TransformerConfig.from_golden(golden | {key: bad})
    with pytest.raises(ValueError, match="head_dim"):
        TransformerConfig(rope_dim_list=(16, 56, 48))
    production = TransformerConfig.production()
    assert (production.depth_double_blocks, production.depth_single_blocks, production.head_dim) == (20, 40, 128)
