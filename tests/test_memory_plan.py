"""Memory-aware choices (gamecraft.serving.memory_plan, and the device checks of gamecraft.serving.plan) with
mocked devices.

The expectations come from the rules of issue 20 (memory per GPU, fp8 only on sm89+) and from recomputing
the byte table independently (the architectures on the meta device), never from the functions under test."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
import torch
from gpu_cards import CAPABILITIES, CARD_MEMORY, MIB, device

from gamecraft.serving.devices import DeviceInfo
from gamecraft.serving.kernels import choose_attention, compile_settings, go_fast_message
from gamecraft.serving.memory_plan import (
    DEFAULT_COSTS,
    GIB,
    ByteCosts,
    budget_bytes,
    min_memory_bytes,
    pass_bytes,
    plan_memory,
)
from gamecraft.serving.plan import check_device, check_request, plan_for, summary_line

PRESET_ROWS = {"distilled": 1, "full": 2}  # guidance 1 → one row per step, guidance 2 → two


# -- the table: sm80/sm89/sm90 × 16/24/48/80/141 GB × presets × go_fast ------------------------------------
@pytest.mark.parametrize(
    "sm, gb, preset, go_fast", list(itertools.product(CAPABILITIES, CARD_MEMORY, PRESET_ROWS, (False, True)))
)
def test_every_card_runs_or_refuses_with_one_line(sm, gb, preset, go_fast):
    dev = device(sm, gb)
    if gb < 48:  # 16 and 24 GB cards fail setup, naming the card, its memory and the minimum
        with pytest.raises(ValueError) as err:
            plan_for(dev)
        message = str(err.value)
        assert "\n" not in message and dev.name in message and f"{dev.total_gib:.1f} GiB" in message
        assert f"≥ {min_memory_bytes() / GIB:.1f} GiB" in message
        return
    plan = plan_for(dev)
    check_request(plan, PRESET_ROWS[preset], go_fast)  # 48 GB and up: both presets run, with and without go_fast
    assert plan.peak <= plan.budget == budget_bytes(dev.total_memory_bytes, 1)
    fp8 = sm != "sm80"
    assert (plan.fp8_twin == "unsupported") == (not fp8)
    assert (go_fast_message(dev) is None) == fp8
    if gb == 48:  # an L40S: the twin cannot sit beside the bf16 weights while the text encoders run
        assert plan.fp8_twin in ("replace", "unsupported") and not plan.keep_both and plan.text_offload
        assert plan.rows_one_at_a_time  # a batch-2 full-preset pass does not fit 44.4 GiB
    if gb == 141:
        assert plan.keep_both and not plan.rows_one_at_a_time and plan.fp8_twin in ("beside", "unsupported")


def test_table_decisions_match_an_independent_byte_count():
    """For each plan, every luxury it lacks would not have fit: recomputed from the byte table by hand."""
    c = DEFAULT_COSTS
    for sm, gb in itertools.product(CAPABILITIES, (48, 80, 141)):
        dev = device(sm, gb)
        plan = plan_for(dev)
        budget = plan.budget
        w, v, t, f = c.transformer, c.vae, c.text_encoders, c.fp8_twin
        batched = c.activations(2, 18) + c.step_cache(2, 18)
        one_by_one = c.activations(1, 18) + c.camera_tokens(1, 18) + c.step_cache(2, 18)
        resident = (
            (2 * w if plan.keep_both else w)
            + v
            + (f * (2 if plan.keep_both else 1) if plan.fp8_twin == "beside" else 0)
        )
        assert resident + (batched if not plan.rows_one_at_a_time else one_by_one) <= budget
        if plan.rows_one_at_a_time:
            assert resident + batched > budget
        if plan.fp8_twin == "replace":  # beside would overflow the prompt encode or a pass
            assert w + v + f + max(t + c.text_encode_work, one_by_one) > budget
        if not plan.keep_both:  # with the twin mode chosen (it has priority), both transformers would not fit
            both = 2 * w + v + (2 * f if plan.fp8_twin == "beside" else 0)
            assert both + max(t + c.text_encode_work, one_by_one) > budget


def test_l40s_runs_both_presets_within_its_usable_memory():
    l40s = DeviceInfo("NVIDIA L40S", (8, 9), 46068 * MIB)
    plan = plan_for(l40s)
    assert 44.3 * GIB < l40s.total_memory_bytes - DEFAULT_COSTS.cuda_context < 44.5 * GIB  # "usable ≈ 44.4 GiB"
    assert plan.guidance_refusal is None and plan.rows_one_at_a_time and plan.fp8_twin == "replace"
    line = summary_line(l40s, choose_attention(l40s, fa3_installed=True), plan, compile_settings(l40s))
    for fact in (
        "NVIDIA L40S (sm89, 45.0 GiB)",
        "attention sdpa",
        "fp8 linears yes",
        "distilled yes",
        "full yes (rows one at a time)",
        "not measured on sm89",
    ):
        assert fact in line
    assert "\n" not in line


def test_small_cards_fail_setup_naming_card_memory_and_minimum():
    t4 = DeviceInfo("Tesla T4", (7, 5), 15360 * MIB)
    with pytest.raises(ValueError, match=r"^Tesla T4 has 15\.0 GiB; GameCraft needs ≥ 4\d\.\d GiB"):
        check_device(t4)
    big_but_old = DeviceInfo("Tesla V100", (7, 0), 80 * GIB)
    with pytest.raises(ValueError, match=r"^Tesla V100 is sm70; GameCraft needs sm80 or newer"):
        check_device(big_but_old)
    check_device(None)  # no GPU: the CPU smoke path decides nothing here


def test_memory_per_gpu_counts_not_the_sum():
    with pytest.raises(ValueError, match="per GPU"):
        check_device(DeviceInfo("NVIDIA L4", (8, 9), CARD_MEMORY[24], count=4))  # 4 × 24 GB = 96 GB in all
    check_device(DeviceInfo("NVIDIA L40S", (8, 9), CARD_MEMORY[48], count=4))


def test_minimum_is_the_boundary_of_the_plan():
    for world in (1, 2, 4):
        need = min_memory_bytes(world)
        plan_memory(need, world)
        with pytest.raises(ValueError, match="GameCraft needs"):
            plan_memory(need - 1, world)


def comfort(plan) -> tuple:
    """The plan's place in the order of preference (smaller is more comfortable): guidance rows run, the
    reference's VAE tiles, the twin beside the weights, both transformers resident, rows batched, text on GPU."""
    twin = {"beside": 0, "unsupported": 0, "replace": 1, "refused": 2}[plan.fp8_twin]
    return (
        plan.guidance_refusal is not None,
        -plan.vae_tile_px,
        twin,
        not plan.keep_both,
        plan.rows_one_at_a_time,
        plan.text_offload,
    )


def test_more_memory_never_gives_a_less_comfortable_plan():
    """Exhaustive over 0.25 GiB steps, 1–8 GPUs: every plan fits its budget, and a larger GPU never gets a
    plan lower in the order of preference than a smaller one."""
    for world, fp8 in itertools.product((1, 2, 3, 4, 6, 8), (False, True)):
        previous = None
        for quarter in range(int(min_memory_bytes(world) / GIB * 4) + 1, 160 * 4):
            plan = plan_memory(quarter * GIB // 4, world, fp8)
            assert plan.peak <= plan.budget
            assert previous is None or comfort(plan) <= comfort(previous)
            previous = plan
        assert comfort(previous) == (False, -256, 0, False, False, False)  # 160 GiB: everything resident


def test_guidance_refused_per_request_when_two_rows_cannot_fit():
    costs = replace(DEFAULT_COSTS, activations_1x18=30 * GIB, activations_2x18=60 * GIB)  # a hypothetical model
    plan = plan_memory(58 * GIB, 1, True, costs)  # 1 row fits; 2 rows do not, even one at a time
    assert plan.guidance_refusal and "\n" not in plan.guidance_refusal
    with pytest.raises(ValueError, match="guidance > 1"):
        check_request(plan, 2, go_fast=False)
    check_request(plan, 1, go_fast=True)


def test_go_fast_refused_when_its_twin_cannot_be_built():
    costs = replace(DEFAULT_COSTS, fp8_twin=25 * GIB)
    plan = plan_memory(48 * GIB, 1, True, costs)  # exact fits; bf16 + a 25 GiB twin while quantizing does not
    assert plan.fp8_twin == "refused"
    with pytest.raises(ValueError, match="go_fast"):
        check_request(plan, 1, go_fast=True)


def test_vae_tiles_shrink_only_when_the_decode_cannot_fit():
    assert all(plan_for(device(sm, gb)).vae_tile_px == 256 for sm in CAPABILITIES for gb in (48, 80, 141))
    costs = replace(DEFAULT_COSTS, vae_decode_256px=30 * GIB)
    assert plan_memory(48 * GIB, 1, False, costs).vae_tile_px < 256


def test_host_memory_decides_where_the_other_transformer_waits():
    l40s = DeviceInfo("NVIDIA L40S", (8, 9), CARD_MEMORY[48])
    small_host = plan_for(l40s, host_memory_bytes=65 * 10**9)  # Replicate's L40S: 65 GB of RAM
    big_host = plan_for(l40s, host_memory_bytes=512 * GIB)
    assert big_host.park_on_host and not small_host.park_on_host
    assert small_host.host_pinned < big_host.host_pinned <= plan_for(l40s).host_pinned


# -- the byte table, recomputed ------------------------------------------------------------------------------
def test_byte_costs_match_the_architectures():
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

    from gamecraft.model import GameCraftTransformer, TransformerConfig
    from gamecraft.model.fp8 import is_fp8_layer
    from gamecraft.model.vae_config import build_model
    from gamecraft.testing.random_weights import CLIP_L_TEXT, LLAMA3_8B, PRODUCTION_VAE

    config = TransformerConfig.production()
    model = GameCraftTransformer(config, dtype=torch.bfloat16, device="meta")
    size = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    assert DEFAULT_COSTS.transformer == size
    linears = [m for name, m in model.named_modules() if is_fp8_layer(name, m)]
    weights = sum(m.weight.numel() for m in linears)
    assert DEFAULT_COSTS.fp8_twin == weights + 4 * sum(m.out_features for m in linears)
    assert DEFAULT_COSTS.fp8_replaced == 2 * weights
    assert DEFAULT_COSTS.vae == 2 * sum(p.numel() for p in build_model(PRODUCTION_VAE).parameters())
    with torch.device("meta"):
        text = LlamaModel(LlamaConfig(**LLAMA3_8B)), CLIPTextModel(CLIPTextConfig(**CLIP_L_TEXT))
    assert DEFAULT_COSTS.text_encoders == 2 * sum(p.numel() for m in text for p in m.parameters())
    assert (DEFAULT_COSTS.hidden, DEFAULT_COSTS.num_heads) == (config.hidden_size, config.num_heads)
    assert DEFAULT_COSTS.layers == config.depth_double_blocks + config.depth_single_blocks
    assert DEFAULT_COSTS.tokens_per_frame == (704 // 16) * (1216 // 16)  # patch 2 of the 8× latents


@torch.no_grad()
def test_step_cache_and_camera_token_bytes_are_what_the_model_keeps():
    """The formulas, checked on a tiny model's real StepCache features and camera tokens (same structure)."""
    from gamecraft.model import GameCraftTransformer, PassInputs, StepCache, TransformerConfig, init_random_

    model = init_random_(GameCraftTransformer(TransformerConfig.tiny(), dtype=torch.float32, device="meta"), seed=1)
    config, g = model.config, torch.Generator().manual_seed(0)
    text = torch.randn(2, 10, config.text_states_dim, generator=g)
    cam = torch.randn(2, 33, 6, 32, 48, generator=g)
    cache = StepCache()
    model(
        PassInputs(
            x=torch.randn(2, config.img_in_channels, 18, 4, 6, generator=g),
            t=torch.tensor([900.0, 900.0]),
            text_states=text,
            text_mask=torch.ones(2, 10, dtype=torch.int64),
            text_states_2=torch.randn(2, config.text_states_dim_2, generator=g),
            cam_latents=cam,
            cache=cache,
        )
    )
    tiny = replace(DEFAULT_COSTS, hidden=config.hidden_size, tokens_per_frame=(4 // 2) * (6 // 2), text_tokens=10)
    assert tiny.step_cache(2, 18) == cache.features.numel() * cache.features.element_size()
    tokens = model.camera_tokens(cam, 18)
    assert tiny.camera_tokens(2, 18) == tokens.numel() * tokens.element_size()


def test_several_gpus_reserve_nccl_buffers_per_gpu():
    assert min_memory_bytes(2) - min_memory_bytes(1) == DEFAULT_COSTS.nccl_buffers > 0
    assert budget_bytes(CARD_MEMORY[48], 4) < budget_bytes(CARD_MEMORY[48], 1)


def test_pass_bytes_split_rows_and_tokens():
    c = DEFAULT_COSTS
    assert pass_bytes(c, 1, 2, 18, False, False) == c.activations(2, 18)
    assert pass_bytes(c, 2, 2, 18, False, False) == c.activations(1, 18)  # one guidance row per GPU
    assert pass_bytes(c, 1, 2, 18, True, True) == c.activations(1, 18) + c.camera_tokens(1, 18) + c.step_cache(2, 18)
    assert pass_bytes(c, 4, 1, 18, False, False) < c.activations(1, 18) / 3


def test_costs_are_frozen_and_replaceable():
    with pytest.raises(AttributeError):
        DEFAULT_COSTS.transformer = 0  # type: ignore[misc]
    assert isinstance(replace(DEFAULT_COSTS, allocator_slack=0), ByteCosts)
