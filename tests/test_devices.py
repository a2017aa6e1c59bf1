"""Probing the GPUs (gamecraft.serving.devices) with a mocked ``torch.cuda``."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import torch
from gpu_cards import CARD_MEMORY, MIB

from gamecraft.model import fp8 as fp8_module
from gamecraft.serving.config import ServingConfig
from gamecraft.serving.devices import DeviceInfo, probe_devices
from gamecraft.serving.memory_plan import GIB
from gamecraft.serving.plan import plan_service


def mock_cuda(monkeypatch, names, memory, capability, peers=True, fp8_failure=None):
    monkeypatch.setattr(fp8_module, "fp8_unavailable_reason", lambda device: fp8_failure)  # the probe's answer
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


def test_a_failed_fp8_probe_turns_go_fast_off_with_one_log_line_and_never_fails_setup(monkeypatch, caplog):
    """sm120 has e4m3 tensor cores, but cuBLAS reports row-wise ``_scaled_mm`` unsupported there: the plan
    follows the probe, not the capability (before: fp8 planned from sm ≥ 8.9, the go_fast warm-up failed
    and setup ended SETUP_FAILED)."""
    name, memory = "NVIDIA RTX PRO 6000 Blackwell Server Edition", 97887 * MIB
    failure = "torch._scaled_mm fails on cuda:0: RuntimeError: CUBLAS_STATUS_NOT_SUPPORTED"
    mock_cuda(monkeypatch, [name], [memory], (12, 0), fp8_failure=failure)
    with caplog.at_level(logging.WARNING, logger="gamecraft.serving.devices"):
        plan = plan_service(ServingConfig(weights="random"))  # probes this (mocked) machine
    assert plan.gpu.fp8_failure == failure
    probe_lines = [r.getMessage() for r in caplog.records if r.name == "gamecraft.serving.devices"]
    assert probe_lines == [f"go_fast runs the exact model on this GPU: {failure}"]
    assert plan.memory.fp8_twin == "unsupported" and not any(shape.go_fast for shape in plan.warm_shapes)
    assert plan.go_fast_note == (
        f"go_fast: fp8 linears do not run on {name} (sm120) with this torch ({failure}); running the exact "
        "bf16 model instead (same video as go_fast=false, no speed-up)"
    )
    mock_cuda(monkeypatch, [name], [memory], (12, 0), fp8_failure=None)
    working = plan_service(ServingConfig(weights="random"))
    assert working.gpu.fp8_failure is None and working.go_fast_note is None
    assert any(shape.go_fast for shape in working.warm_shapes)  # the probe decided, not the capability
    mock_cuda(monkeypatch, ["NVIDIA A100-SXM4-80GB"], [memory], (8, 0), fp8_failure="never asked")
    assert plan_service(ServingConfig(weights="random")).gpu.fp8_failure is None  # no fp8 there: no probe
