"""Probing the GPUs (gamecraft.serving.devices) with a mocked ``torch.cuda``."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from gpu_cards import CARD_MEMORY

from gamecraft.serving.devices import DeviceInfo, probe_devices
from gamecraft.serving.memory_plan import GIB


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
