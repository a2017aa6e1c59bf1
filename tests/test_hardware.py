"""Capability- and memory-aware choices (gamecraft.serving.hardware, gamecraft.serving.memory_plan) with mocked devices.

The expectations come from the rules of issue 20 (FA3 only on sm90, fp8 only on sm89+, memory per GPU)
and from recomputing the byte table independently (the architectures on the meta device, the Ulysses
send buffers of the real exchange code), never from the functions under test."""

from __future__ import annotations

import itertools
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from gamecraft.model.attention import ATTENTION_BACKENDS, MEASUREMENT_ONLY_BACKENDS
from gamecraft.serving import hardware
from gamecraft.serving.hardware import (
    ATTENTION_CHOICES,
    DeviceInfo,
    check_device,
    check_request,
    choose_attention,
    compile_settings,
    exchange_bytes_per_pass,
    fp8_linears_supported,
    go_fast_message,
    kernel_allowed,
    multi_gpu_estimate,
    plan_for,
    probe_devices,
    summary_line,
)
from gamecraft.serving.memory_plan import (
    DEFAULT_COSTS,
    GIB,
    ByteCosts,
    budget_bytes,
    min_memory_bytes,
    pass_bytes,
    plan_memory,
)

MIB = 1 << 20
# Memory as the driver reports it (nvidia-smi "MiB" totals): T4, L4, L40S/A40, H100 80GB, A100 80GB, H200.
CARD_MEMORY = {16: 15360 * MIB, 24: 23034 * MIB, 48: 46068 * MIB, 80: 81559 * MIB, 141: 143771 * MIB}
CAPABILITIES = {"sm80": (8, 0), "sm89": (8, 9), "sm90": (9, 0)}
ALL_CAPABILITIES = [(7, 0), (7, 5), (8, 0), (8, 6), (8, 7), (8, 9), (9, 0), (10, 0), (12, 0)]
PRESET_ROWS = {"distilled": 1, "full": 2}  # guidance 1 → one row per step, guidance 2 → two


def device(sm: str, gb: int, count: int = 1, nvlink: bool | None = None) -> DeviceInfo:
    return DeviceInfo(f"GPU {sm} {gb}GB", CAPABILITIES[sm], CARD_MEMORY[gb], count, nvlink)


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


# -- kernels ---------------------------------------------------------------------------------------------------
def test_no_combination_reaches_fa3_sage_or_fp8_where_the_capability_forbids():
    """Exhaustive: every capability × requested kernel × installed packages × memory."""
    for cap, requested, fa3, sage, gb in itertools.product(
        ALL_CAPABILITIES, ATTENTION_CHOICES, (False, True), (False, True), CARD_MEMORY
    ):
        dev = DeviceInfo("GPU", cap, CARD_MEMORY[gb])
        hopper = cap[0] == 9  # the rule of issue 20, written independently of kernel_allowed
        try:
            choice = choose_attention(dev, requested, fa3_installed=fa3, sage_installed=sage)
        except ValueError as err:
            assert "\n" not in str(err)
            continue
        kernels = {choice.exact, choice.go_fast}
        assert hopper or not kernels & {"fa3", "sage"}
        assert ("fa3" not in kernels or fa3) and ("sage" not in kernels or sage)
        assert all(kernel_allowed(kernel, cap) for kernel in kernels)
        assert choice.exact != "sage" and kernels <= set(ATTENTION_CHOICES) - {"auto"}
        assert fp8_linears_supported(dev) == (cap >= (8, 9))
        try:
            plan = plan_for(dev)
        except ValueError:
            continue
        assert (plan.fp8_twin == "unsupported") == (cap < (8, 9))


def test_fa3_on_a_non_hopper_gpu_is_a_one_line_setup_error():
    l40s = DeviceInfo("NVIDIA L40S", (8, 9), CARD_MEMORY[48])
    with pytest.raises(ValueError) as err:
        choose_attention(l40s, "fa3", fa3_installed=True)
    assert str(err.value) == "GAMECRAFT_ATTENTION=fa3 needs a Hopper GPU (sm90); NVIDIA L40S is sm89"
    b200 = DeviceInfo("NVIDIA B200", (10, 0), 180 * GIB)
    with pytest.raises(ValueError, match="Hopper"):
        choose_attention(b200, "fa3", fa3_installed=True)
    h100 = DeviceInfo("NVIDIA H100 80GB HBM3", (9, 0), CARD_MEMORY[80])
    with pytest.raises(ValueError, match="needs the fa3-fwd package"):
        choose_attention(h100, "fa3", fa3_installed=False)
    with pytest.raises(ValueError, match="expected one of"):
        choose_attention(h100, "flash4", fa3_installed=True)


@pytest.mark.parametrize(
    "cap, fa3, sage, requested, expected",
    [
        ((9, 0), True, False, "auto", ("fa3", "fa3")),
        ((9, 0), False, False, "auto", ("sdpa", "sdpa")),
        ((9, 0), True, True, "auto", ("fa3", "sage")),
        ((9, 0), True, True, "sdpa-cudnn", ("sdpa-cudnn", "sdpa-cudnn")),
        ((8, 9), True, True, "auto", ("sdpa", "sdpa")),  # fa3-fwd imports anywhere; its kernels need sm90
        ((8, 0), True, False, "sdpa-cudnn", ("sdpa-cudnn", "sdpa-cudnn")),
        ((10, 0), True, True, "auto", ("sdpa", "sdpa")),
    ],
)
def test_attention_choices(cap, fa3, sage, requested, expected):
    choice = choose_attention(DeviceInfo("GPU", cap, 80 * GIB), requested, fa3_installed=fa3, sage_installed=sage)
    assert (choice.exact, choice.go_fast) == expected


def test_cpu_keeps_todays_behaviour_and_kernel_names_match_the_model():
    assert choose_attention(None, fa3_installed=False).exact == "sdpa"
    assert choose_attention(None, "sdpa-math", fa3_installed=False).exact == "sdpa-math"
    assert fp8_linears_supported(None) and go_fast_message(None) is None
    # every serving kernel of the engine is a valid choice here
    assert set(ATTENTION_BACKENDS) - set(MEASUREMENT_ONLY_BACKENDS) <= set(ATTENTION_CHOICES)
    with pytest.raises(ValueError, match="unknown kernel"):
        kernel_allowed("warp", (9, 0))


def test_go_fast_without_fp8_logs_one_line_naming_the_card():
    a100 = DeviceInfo("NVIDIA A100-SXM4-80GB", (8, 0), 81920 * MIB)
    message = go_fast_message(a100)
    assert message and "\n" not in message and "NVIDIA A100-SXM4-80GB (sm80)" in message and "exact" in message
    assert go_fast_message(replace(a100, capability=(8, 9))) is None


def test_compile_is_measured_only_on_hopper():
    assert compile_settings(device("sm90", 80)).measured
    for sm in ("sm80", "sm89"):
        settings = compile_settings(device(sm, 48))
        assert settings.blocks and settings.vae_decoder and not settings.measured
    assert not compile_settings(device("sm90", 80), enabled=False).blocks
    assert not compile_settings(None).blocks


# -- the byte table, recomputed ------------------------------------------------------------------------------
def test_byte_costs_match_the_architectures():
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

    from gamecraft.model import GameCraftTransformer, TransformerConfig
    from gamecraft.model.fp8 import is_fp8_layer
    from gamecraft.model.vae import build_model
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
    from gamecraft.model import GameCraftTransformer, StepCache, TransformerConfig, init_random_

    model = init_random_(GameCraftTransformer(TransformerConfig.tiny(), dtype=torch.float32, device="meta"), seed=1)
    config, g = model.config, torch.Generator().manual_seed(0)
    text = torch.randn(2, 10, config.text_states_dim, generator=g)
    cam = torch.randn(2, 33, 6, 32, 48, generator=g)
    cache = StepCache()
    model(
        torch.randn(2, config.img_in_channels, 18, 4, 6, generator=g),
        torch.tensor([900.0, 900.0]),
        text,
        torch.ones(2, 10, dtype=torch.int64),
        torch.randn(2, config.text_states_dim_2, generator=g),
        cam_latents=cam,
        cache=cache,
    )
    tiny = replace(DEFAULT_COSTS, hidden=config.hidden_size, tokens_per_frame=(4 // 2) * (6 // 2), text_tokens=10)
    assert tiny.step_cache(2, 18) == cache.features.numel() * cache.features.element_size()
    tokens = model.camera_tokens(cam, 18)
    assert tiny.camera_tokens(2, 18) == tokens.numel() * tokens.element_size()


def test_several_gpus_reserve_nccl_buffers_per_gpu():
    assert min_memory_bytes(2) - min_memory_bytes(1) == DEFAULT_COSTS.nccl_buffers > 0
    assert budget_bytes(CARD_MEMORY[48], 4) < budget_bytes(CARD_MEMORY[48], 1)


def test_exchange_bytes_are_the_ulysses_buffers():
    """Per layer: the q/k/v send buffers that SequenceParallel.pack_heads builds plus the returned outputs,
    (P − 1)/P of each leaving the GPU; at 4 GPUs one q/k/v buffer is the 277 MB BENCHMARKS.md measured."""
    from gamecraft.parallel.ulysses import SequenceParallel

    c = DEFAULT_COSTS
    for world, rows in ((2, 1), (4, 1), (8, 1), (4, 2), (3, 2)):
        sp = world // (2 if rows == 2 and world % 2 == 0 else 1)
        rows_here = rows if sp == world else 1
        n_r = 18 * c.tokens_per_frame // sp
        q = torch.empty(rows_here, n_r, c.num_heads, c.hidden // c.num_heads, device="meta", dtype=torch.bfloat16)
        sends = SequenceParallel(None, 0, sp).pack_heads(q, q, q) if sp > 1 else []
        send = sum(s.numel() * s.element_size() for s in sends)
        expected = c.layers * (send + q.numel() * q.element_size()) * (sp - 1) / sp
        assert exchange_bytes_per_pass(world, rows, 18) == pytest.approx(expected, rel=1e-4)
    assert exchange_bytes_per_pass(2, 2, 18) == 0  # guidance-parallel rows exchange nothing inside a pass
    q = torch.empty(1, 18 * c.tokens_per_frame // 4, 24, 128, device="meta", dtype=torch.bfloat16)
    assert 3 * q.numel() * 2 == pytest.approx(277e6, rel=0.01)


def test_pass_bytes_split_rows_and_tokens():
    c = DEFAULT_COSTS
    assert pass_bytes(c, 1, 2, 18, False, False) == c.activations(2, 18)
    assert pass_bytes(c, 2, 2, 18, False, False) == c.activations(1, 18)  # one guidance row per GPU
    assert pass_bytes(c, 1, 2, 18, True, True) == c.activations(1, 18) + c.camera_tokens(1, 18) + c.step_cache(2, 18)
    assert pass_bytes(c, 4, 1, 18, False, False) < c.activations(1, 18) / 3


# -- several GPUs ----------------------------------------------------------------------------------------------
def test_pcie_splits_less_efficiently_than_nvlink_and_never_below_one_gpu():
    h200x4 = DeviceInfo("NVIDIA H200", (9, 0), CARD_MEMORY[141], 4, True)
    nvlink = multi_gpu_estimate(h200x4, 1, "fa3")
    assert 0.91 <= nvlink.efficiency <= 1.0  # measured: 91 % per 18-frame pass on 4 × H200 (BENCHMARKS.md)
    pcie = multi_gpu_estimate(replace(h200x4, nvlink=False), 1, "fa3")
    assert pcie.efficiency < nvlink.efficiency and pcie.link == "PCIe"
    for count in (2, 3, 4, 6, 8):
        l40s = DeviceInfo("NVIDIA L40S", (8, 9), CARD_MEMORY[48], count, False)
        for rows in (1, 2):
            estimate = multi_gpu_estimate(l40s, rows)
            assert estimate.pass_s < rows * hardware.pass_seconds_estimate(l40s, "sdpa")  # faster than one GPU
    assert multi_gpu_estimate(DeviceInfo("NVIDIA L40S", (8, 9), CARD_MEMORY[48]), 1) is None
    assert multi_gpu_estimate(DeviceInfo("Mystery GPU", (9, 0), CARD_MEMORY[80], 2), 1) is None


# -- probing (mocked torch.cuda) -----------------------------------------------------------------------------
def mock_cuda(monkeypatch, names, memory, capability, peers=True):
    props = [
        SimpleNamespace(name=n, major=capability[0], minor=capability[1], total_memory=m)
        for n, m in zip(names, memory, strict=True)
    ]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: bool(props))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(props))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props[i])
    monkeypatch.setattr(torch.cuda, "can_device_access_peer", lambda i, j: peers)


def test_probe_devices(monkeypatch):
    mock_cuda(monkeypatch, [], [], (0, 0))
    assert probe_devices() is None
    mock_cuda(monkeypatch, ["NVIDIA L40S"] * 2, [CARD_MEMORY[48]] * 2, (8, 9))
    assert probe_devices() == DeviceInfo("NVIDIA L40S", (8, 9), CARD_MEMORY[48], 2, False)  # no NVLink on L40S
    mock_cuda(monkeypatch, ["NVIDIA H100 80GB HBM3"] * 4, [CARD_MEMORY[80]] * 4, (9, 0))
    assert probe_devices().nvlink is True  # SXM part with peer access
    mock_cuda(monkeypatch, ["NVIDIA H100 80GB HBM3"] * 4, [CARD_MEMORY[80]] * 4, (9, 0), peers=False)
    assert probe_devices().nvlink is False
    mock_cuda(monkeypatch, ["NVIDIA H100 PCIe"] * 2, [CARD_MEMORY[80], CARD_MEMORY[80] - GIB], (9, 0))
    probed = probe_devices()
    assert probed.nvlink is None and probed.total_memory_bytes == CARD_MEMORY[80] - GIB  # smallest GPU counts
    mock_cuda(monkeypatch, ["NVIDIA H200"], [CARD_MEMORY[141]], (9, 0))
    assert probe_devices() == DeviceInfo("NVIDIA H200", (9, 0), CARD_MEMORY[141], 1, None)


def test_costs_are_frozen_and_replaceable():
    with pytest.raises(AttributeError):
        DEFAULT_COSTS.transformer = 0  # type: ignore[misc]
    assert isinstance(replace(DEFAULT_COSTS, allocator_slack=0), ByteCosts)
