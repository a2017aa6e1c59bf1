"""The random-weights engine (used for full-size GPU runs) at small sizes on the CPU: it must generate."""

from __future__ import annotations

import torch

from gamecraft.model import TransformerConfig
from gamecraft.pipeline.actions import parse_actions
from gamecraft.pipeline.camera import chunk_poses
from gamecraft.pipeline.presets import resolve_preset
from gamecraft.pipeline.session import WorldSession, chunk_noise
from gamecraft.testing.random_weights import TINY_CLIP, TINY_LLM, random_engine
from gamecraft.testing.tiny_weights import TINY_VAE


def test_small_random_engine_generates_a_chunk():
    engine = random_engine(
        device="cpu",
        dtype=torch.float32,
        vae_dtype=torch.float32,
        text_dtype=torch.float32,
        text_offload=False,
        transformer_config=TransformerConfig.tiny().__class__(
            hidden_size=64,
            num_heads=2,
            depth_double_blocks=1,
            depth_single_blocks=1,
            rope_dim_list=(8, 12, 12),
            text_states_dim=64,
            text_states_dim_2=32,
        ),
        vae_config=TINY_VAE,
        llm_config=TINY_LLM,
        clip_config=TINY_CLIP,
    )
    assert engine.loaded_variants == ("distilled", "full")
    text = engine.encode_text("a village", "", guidance=True)
    assert text.states.shape == (2, 256, 64) and torch.isfinite(text.states).all()
    history = torch.randn(1, 16, 1, 4, 6)
    session = WorldSession.start(engine, resolve_preset("distilled", 2), "a village", 1, 32, 48, history=history)
    result = session.generate_chunk(chunk_poses(parse_actions('["w"]', "[0.2]")[0]), "w")
    assert result.frames.shape == (33, 32, 48, 3) and torch.isfinite(result.latents).all()
    assert chunk_noise(1, 0, (1, 16, 10, 4, 6)).shape == (1, 16, 10, 4, 6)
