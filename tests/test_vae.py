"""VAE: config mapping, official checkpoint loading, tiling/sampling/decoding against the goldens."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from gamecraft.model.vae import GameCraftVae
from gamecraft.model.vae_config import VaeConfig, build_model, load_state_dict_strict
from gamecraft.parity import load_manifest, load_tensors, run_sections
from gamecraft.weights import DEFAULT_LAYOUT
from gamecraft.weights.vae import load_vae, read_official_checkpoint


@pytest.fixture(scope="module")
def golden_config(golden_dir) -> dict:
    return json.loads((golden_dir / "vae_tiny_config.json").read_text())


@pytest.fixture(scope="module")
def golden_weights(golden_dir) -> dict[str, torch.Tensor]:
    return load_tensors(golden_dir, "vae_tiny_weights")


@pytest.fixture(scope="module")
def tiny_vae(golden_config, golden_weights) -> GameCraftVae:
    config = VaeConfig.from_official(golden_config)
    model = build_model(config)
    load_state_dict_strict(model, golden_weights, "golden")
    return GameCraftVae(model, config, tiling=True)


@pytest.fixture()
def vae_dir(tmp_path, golden_config, golden_weights):
    """A weights directory holding only the (golden) tiny VAE in the official container format."""
    (tmp_path / DEFAULT_LAYOUT.vae_config).parent.mkdir(parents=True)
    (tmp_path / DEFAULT_LAYOUT.vae_config).write_text(json.dumps(golden_config))
    torch.save({f"vae.{k}": v for k, v in golden_weights.items()}, tmp_path / DEFAULT_LAYOUT.vae_weights)
    return tmp_path


def test_parity_section_passes(golden_dir):
    results = run_sections(golden_dir, ["vae"])
    assert len(results) >= 10 and all(r.ok for r in results), [r.line() for r in results if not r.ok]


# -- config ------------------------------------------------------------------------------------
def test_config_round_trip(golden_config):
    config = VaeConfig.from_official(golden_config)
    assert config.block_out_channels == tuple(golden_config["block_out_channels"])
    assert config.tile_latent_size == golden_config["sample_size"] // 8
    assert config.mid_block_causal_attn is golden_config["mid_block_causal_attn"]
    assert VaeConfig.from_official(config.to_official()) == config


def test_config_without_causal_key_uses_reference_default(golden_config, caplog):
    raw = {k: v for k, v in golden_config.items() if k != "mid_block_causal_attn"}
    with caplog.at_level(logging.WARNING, logger="gamecraft.model.vae"):
        assert VaeConfig.from_official(raw).mid_block_causal_attn is False
    assert "mid_block_causal_attn" in caplog.text


def test_config_ignores_reference_machinery_keys(golden_config):
    raw = {
        **golden_config,
        "force_upcast": True,
        "use_trt_engine": False,
        "nccl_gather": True,
        "engine_path": "x.engine",
        "_diffusers_version": "0.30.0",
        "spatial_compression_ratio": 8,
    }
    assert VaeConfig.from_official(raw) == VaeConfig.from_official(golden_config)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"bogus_key": 1}, "bogus_key"),
        ({"disable_causal_conv": True}, "disable_causal_conv"),
        ({"down_block_types": ["DownEncoderBlock2D"] * 4}, "down_block_types"),
        ({"up_block_types": ["UpDecoderBlockCausal3D"] * 3}, "up_block_types"),
        ({"sample_size": [32, 32]}, "sample_size"),
        ({"act_fn": "tanh"}, "act_fn"),
        ({"_class_name": "AutoencoderKL"}, "_class_name"),
        ({"spatial_compression_ratio": 16}, "spatial_compression_ratio"),
    ],
)
def test_config_rejects_unsupported_values(golden_config, change, message):
    with pytest.raises(ValueError, match=message):
        VaeConfig.from_official({**golden_config, **change})


def test_config_names_missing_keys(golden_config):
    raw = {k: v for k, v in golden_config.items() if k != "scaling_factor"}
    with pytest.raises(ValueError, match="scaling_factor"):
        VaeConfig.from_official(raw)


# -- checkpoint loading ------------------------------------------------------------------------
def test_load_vae_from_official_layout(vae_dir, tiny_vae, golden_dir):
    vae = load_vae(vae_dir, DEFAULT_LAYOUT, device="cpu", dtype=torch.float32)
    assert vae.dtype == torch.float32 and vae.tiling
    for key, value in vae.model.state_dict().items():
        assert torch.equal(value, tiny_vae.model.state_dict()[key]), key


def test_checkpoint_under_state_dict_with_foreign_keys(tmp_path, golden_weights):
    path = tmp_path / "pytorch_model.pt"
    torch.save(
        {
            "state_dict": {
                **{f"vae.{k}": v for k, v in golden_weights.items()},
                "loss.discriminator.weight": torch.zeros(2),
            }
        },
        path,
    )
    tensors = read_official_checkpoint(path)
    assert set(tensors) == set(golden_weights)


def test_checkpoint_without_vae_keys_is_refused(tmp_path, golden_weights):
    path = tmp_path / "pytorch_model.pt"
    torch.save(dict(golden_weights), path)
    with pytest.raises(ValueError, match="vae."):
        read_official_checkpoint(path)


def test_missing_and_unexpected_keys_are_named(vae_dir, golden_weights):
    broken = {f"vae.{k}": v for k, v in golden_weights.items() if k != "decoder.conv_out.conv.weight"}
    broken["vae.decoder.extra.weight"] = torch.zeros(1)
    torch.save(broken, vae_dir / DEFAULT_LAYOUT.vae_weights)
    with pytest.raises(ValueError, match=r"decoder\.conv_out\.conv\.weight.*decoder\.extra\.weight"):
        load_vae(vae_dir, dtype=torch.float32)


def test_missing_files_name_the_expected_path(vae_dir):
    (vae_dir / DEFAULT_LAYOUT.vae_weights).unlink()
    with pytest.raises(FileNotFoundError, match="pytorch_model.pt"):
        load_vae(vae_dir)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "pytorch_model.pt"
    torch.save({"vae.x": torch.zeros(1), "hook": logging.getLogger("x")}, path)
    with pytest.raises(ValueError, match="refusing to load"):
        read_official_checkpoint(path)


# -- numerics against the end-to-end goldens (tiled 32x48 encode, tiled chunk decodes) ------------
def test_tiled_posterior_and_chunk_decodes_match_e2e(golden_dir, tiny_vae):
    e2e = load_tensors(golden_dir, "e2e")
    mean, std = tiny_vae.posterior(e2e["image_pixels"])
    torch.testing.assert_close(mean, e2e["image_posterior_mean"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(std, e2e["image_posterior_std"], rtol=1e-4, atol=1e-4)
    for chunk in (0, 1):
        frames = tiny_vae.decode(e2e[f"chunk{chunk}/last_latents"])
        assert frames.dtype == torch.float32
        torch.testing.assert_close(frames, e2e[f"chunk{chunk}/video_0_1"], rtol=1e-4, atol=1e-4)


def test_encode_samples_with_the_callers_generator(golden_dir, tiny_vae):
    pixels = load_tensors(golden_dir, "e2e")["image_pixels"]
    rng_state = torch.random.get_rng_state()
    a = tiny_vae.encode_image(pixels, torch.Generator().manual_seed(7))
    b = tiny_vae.encode_image(pixels, torch.Generator().manual_seed(7))
    c = tiny_vae.encode_image(pixels, torch.Generator().manual_seed(8))
    assert torch.equal(torch.random.get_rng_state(), rng_state), "the global RNG must not be used"
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Independent recomputation of the reference recipe: fp16(fp16(mean + std * noise) * scaling).
    mean, std = tiny_vae.posterior(pixels)
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(7))
    expected = (mean + std * noise).half() * tiny_vae.config.scaling_factor
    assert a.dtype == torch.float16 and torch.equal(a, expected)


def test_image_latent_of_the_end_to_end_run(golden_dir, tiny_vae):
    """A CPU generator seeded like the reference's global RNG reproduces its sampled image latent."""
    e2e = load_tensors(golden_dir, "e2e")
    seed = load_manifest(golden_dir, "e2e")["info"]["seed"]
    latents = tiny_vae.encode_image(e2e["image_pixels"], torch.Generator().manual_seed(seed))
    # float16 values: allow one float16 step where the float32 sample sits on a rounding boundary.
    torch.testing.assert_close(latents.float(), e2e["image_latents_fp16_scaled"], rtol=2e-3, atol=1e-4)


def test_video_round_trip_shapes(tiny_vae):
    video = torch.rand(1, 3, 33, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    latents = tiny_vae.encode_video(video, torch.Generator().manual_seed(0))
    assert latents.shape == (1, 16, 9, 2, 2)
    frames = tiny_vae.decode(latents)
    assert frames.shape == (1, 3, 33, 16, 16)
    assert frames.min() >= 0 and frames.max() <= 1


def test_input_validation(tiny_vae):
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="image"):
        tiny_vae.encode_image(torch.zeros(1, 3, 5, 16, 16), generator)
    with pytest.raises(ValueError, match="video"):
        tiny_vae.encode_video(torch.zeros(1, 3, 4, 16, 16), generator)
    with pytest.raises(ValueError, match="tile time"):
        tiny_vae.encode_moments(torch.zeros(1, 3, tiny_vae.config.sample_tsize + 5, 8, 8))
    with pytest.raises(ValueError, match="tile time"):
        tiny_vae.decode_raw(torch.zeros(1, 16, tiny_vae.config.sample_tsize // 4 + 1, 1, 1))


def test_float16_runs_close_to_float32(vae_dir):
    pixels = torch.rand(1, 3, 1, 48, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    results = {}
    for dtype in (torch.float32, torch.float16):
        vae = load_vae(vae_dir, dtype=dtype)
        mean, _ = vae.posterior(pixels)
        results[dtype] = (mean.float(), vae.decode(mean * vae.config.scaling_factor))
        assert vae.dtype == dtype and results[dtype][1].dtype == torch.float32
    torch.testing.assert_close(results[torch.float16][0], results[torch.float32][0], rtol=0, atol=0.05)
    torch.testing.assert_close(results[torch.float16][1], results[torch.float32][1], rtol=0, atol=0.02)


def test_compiled_decoder_serves_the_full_tiles_and_matches_eager(tiny_vae):
    """compile_decoder("full") routes only full-size latent tiles through torch.compile (one graph per
    shape); "all" compiles every tile shape. Dynamo's CompileCounter backend runs the captured graphs
    as they are, so the frames must equal the eager decoder's."""
    from torch._dynamo.testing import CompileCounter

    tile, stride = tiny_vae.config.tile_latent_size, int(tiny_vae.config.tile_latent_size * 0.75)
    h, w = tile + stride // 2, 2 * stride + tile // 4  # edge tiles smaller than a full tile in both directions
    latents = torch.randn(1, 16, 3, h, w, generator=torch.Generator().manual_seed(0))
    eager = tiny_vae.decode(latents)
    graphs = {}
    for scope in ("full", "all"):
        torch._dynamo.reset()
        counter = CompileCounter()
        tiny_vae.compile_decoder(scope, backend=counter)
        assert tiny_vae.decoder_compiled
        try:
            torch.testing.assert_close(tiny_vae.decode(latents), eager, rtol=0, atol=1e-6)
            graphs[scope] = counter.frame_count
            tiny_vae.decode(latents)
            assert counter.frame_count == graphs[scope]  # static shapes compiled once
        finally:
            tiny_vae.uncompile_decoder()
    assert not tiny_vae.decoder_compiled
    assert graphs["full"] >= 1
    assert graphs["all"] > graphs["full"]  # the edge tiles' shapes were compiled too
    with pytest.raises(ValueError, match="scope"):
        tiny_vae.compile_decoder("edges")


def test_engine_config_compile_vae_wraps_the_decoder(tiny_vae, tmp_path):
    from gamecraft.engine import EngineConfig, GameCraftEngine
    from gamecraft.model import TransformerConfig

    try:
        GameCraftEngine(EngineConfig.for_cpu(tmp_path), tiny_vae, None, TransformerConfig.tiny())
        assert not tiny_vae.decoder_compiled
        GameCraftEngine(EngineConfig.for_cpu(tmp_path, compile_vae=True), tiny_vae, None, TransformerConfig.tiny())
        assert tiny_vae.decoder_compiled  # compiled lazily, on the first full-tile decode
    finally:
        tiny_vae.uncompile_decoder()
