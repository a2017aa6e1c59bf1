"""The engine's memory placements chosen by the GPU memory plan, on tiny weights (CPU): guidance rows one at a
time, the fp8 twin replacing the bf16 block linears, and swapped-out transformers dropped instead of parked."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import torch

from gamecraft.engine import EngineConfig, GameCraftEngine
from gamecraft.engine.twins import Fp8Twin
from gamecraft.model import GameCraftTransformer, PassInputs, TransformerConfig, init_random_
from gamecraft.model.fp8 import FP8Linear, is_fp8_layer
from gamecraft.pipeline.sampling import TextConditioning, denoise_chunk
from gamecraft.pipeline.scheduler import get_schedule
from gamecraft.testing.tiny_weights import write_tiny_weights


@pytest.fixture(scope="module")
def model():
    return init_random_(
        GameCraftTransformer(TransformerConfig.tiny(), dtype=torch.float32, device="meta"), 3, device="cpu"
    ).eval()


def _chunk(model, rows_at_once: int, flags):
    g = torch.Generator().manual_seed(5)
    config = model.config
    mask = torch.tensor([[1] * 3 + [0] * 7, [1] * 8 + [0] * 2])
    text = TextConditioning(
        torch.randn(2, 10, config.text_states_dim, generator=g),
        mask,
        torch.randn(2, config.text_states_dim_2, generator=g),
        (3, 8),
    )
    camera = model.camera_tokens(torch.randn(2, 33, 6, 32, 48, generator=g), 18)
    timesteps, sigmas = get_schedule(len(flags), 5.0)
    with torch.no_grad():
        return denoise_chunk(
            model,
            torch.randn(1, 16, 18, 4, 6, generator=g),
            torch.randn(1, 16, 9, 4, 6, generator=g),
            text,
            camera,
            timesteps,
            sigmas,
            2.0,
            flags,
            rows_at_once=rows_at_once,
        )


def test_guidance_rows_one_at_a_time_give_the_batched_chunk(model):
    """Two one-row passes per step, each row with its own step cache (steps 2 and 4 reuse it)."""
    flags = [False, True, False, True]
    batched, split = _chunk(model, 2, flags), _chunk(model, 1, flags)
    torch.testing.assert_close(split, batched, rtol=1e-4, atol=1e-5)
    other = _chunk(model, 1, [False] * 4)  # the cache really was used: without it the result differs
    assert not torch.allclose(other, split, atol=1e-4)


@torch.no_grad()
def test_the_fp8_twin_replacing_the_bf16_linears_keeps_one_copy_in_use(model):
    exact_weights = [m.weight for name, m in model.named_modules() if is_fp8_layer(name, m)]
    x = dict(
        x=torch.randn(1, 33, 10, 4, 6),
        t=torch.full((1,), 900.0),
        text_states=torch.randn(1, 10, 64),
        text_mask=torch.ones(1, 10, dtype=torch.int64),
        text_states_2=torch.randn(1, 32),
        cam_latents=torch.randn(1, 33, 6, 32, 48),
        text_lengths=[10],
    )
    want_exact = model(PassInputs(**x))
    twin = Fp8Twin(model, torch.device("cpu"), "replace")
    want_fast = twin.twin(PassInputs(**x))
    for _ in range(2):
        go_fast = twin.use(True)
        assert go_fast is twin.twin and not twin._exact.resident  # the bf16 block linears are parked
        assert twin._exact.nbytes == sum(w.numel() * w.element_size() for w in exact_weights)
        torch.testing.assert_close(go_fast(PassInputs(**x)), want_fast, rtol=0, atol=0)
        exact = twin.use(False)
        assert exact is model and twin._exact.resident and not twin._go_fast.resident  # the fp8 weights parked
        fp8 = [m for m in twin.twin.modules() if isinstance(m, FP8Linear)]
        assert twin._go_fast.nbytes == sum(m.weight_fp8.numel() + m.weight_scale.numel() * 4 for m in fp8)
        torch.testing.assert_close(exact(PassInputs(**x)), want_exact, rtol=0, atol=0)
    beside = Fp8Twin(model, torch.device("cpu"), "beside")
    assert beside.use(True) is beside.twin and beside.use(False) is model and beside._exact is None


def test_a_swapped_out_transformer_is_dropped_and_reloaded_when_host_memory_is_short(tmp_path, caplog):
    weights = write_tiny_weights(tmp_path / "w")
    base = EngineConfig.for_cpu(weights, preload=("distilled",))
    engine = GameCraftEngine.load(replace(base, one_transformer_on_gpu=True, park_on_host=False))
    distilled = engine.transformer("distilled")
    with caplog.at_level(logging.INFO, logger="gamecraft.engine.local"):
        engine.transformer("full")
        assert engine.loaded_variants == ("full",)  # distilled was dropped, not parked
        again = engine.transformer("distilled")
    assert again is not distilled and engine.loaded_variants == ("distilled",)
    assert "dropped the distilled transformer" in caplog.text and "loaded distilled transformer" in caplog.text
    parking = GameCraftEngine.load(replace(base, one_transformer_on_gpu=True, park_on_host=True))
    kept = parking.transformer("distilled")
    parking.transformer("full")
    assert parking.loaded_variants == ("distilled", "full") and not parking._parked["distilled"].resident
    assert parking.transformer("distilled") is kept and parking._parked["distilled"].resident
