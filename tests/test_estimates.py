"""The multi-GPU cost model (gamecraft.serving.estimates): the exchanged bytes recomputed from the real
Ulysses send buffers, and the modeled split checked against the 4 × H200 measurement of BENCHMARKS.md."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from gpu_cards import CARD_MEMORY

from gamecraft.serving import estimates
from gamecraft.serving.devices import DeviceInfo
from gamecraft.serving.estimates import exchange_bytes_per_pass, multi_gpu_estimate
from gamecraft.serving.memory_plan import DEFAULT_COSTS


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
            assert estimate.pass_s < rows * estimates.pass_seconds_estimate(l40s, "sdpa")  # faster than one GPU
    assert multi_gpu_estimate(DeviceInfo("NVIDIA L40S", (8, 9), CARD_MEMORY[48]), 1) is None
    assert multi_gpu_estimate(DeviceInfo("Mystery GPU", (9, 0), CARD_MEMORY[80], 2), 1) is None
