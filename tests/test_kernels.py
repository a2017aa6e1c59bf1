"""The kernel choices per GPU (gamecraft.serving.kernels) with mocked devices: the rules of issue 20 (FA3 and
SageAttention only on sm90, fp8 only on sm89+, compilation measured only on Hopper), written independently of
the functions under test."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from gpu_cards import ALL_CAPABILITIES, CARD_MEMORY, MIB, device

from gamecraft.model.attention import ATTENTION_BACKENDS, MEASUREMENT_ONLY_BACKENDS
from gamecraft.serving.devices import DeviceInfo
from gamecraft.serving.kernels import (
    ATTENTION_CHOICES,
    choose_attention,
    compile_settings,
    fp8_linears_supported,
    go_fast_message,
    kernel_allowed,
)
from gamecraft.serving.memory_plan import GIB
from gamecraft.serving.plan import plan_for


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
