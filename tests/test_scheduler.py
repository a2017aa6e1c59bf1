"""Flow-matching schedule and Euler step: goldens, an independent float64 formula, edge cases."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from gamecraft.parity import load_manifest, load_tensors, run_sections
from gamecraft.pipeline.scheduler import euler_step, get_schedule


def test_parity_section_passes(golden_dir):
    results = run_sections(golden_dir, ["scheduler"])
    assert results and all(r.ok for r in results), [r.line() for r in results if not r.ok]


def test_schedules_are_bit_identical_to_the_reference(golden_dir):
    manifest = load_manifest(golden_dir, "scheduler")
    tensors = load_tensors(golden_dir, "scheduler")
    shift = manifest["constructor"]["shift"]
    steps = sorted({int(m[1]) for name in manifest["tensors"] if (m := re.match(r"timesteps_(\d+)$", name))})
    assert steps
    for n in steps:
        timesteps, sigmas = get_schedule(n, shift)
        assert timesteps.dtype == sigmas.dtype == torch.float32
        assert torch.equal(timesteps, tensors[f"timesteps_{n}"])
        assert torch.equal(sigmas, tensors[f"sigmas_{n}"])


@pytest.mark.parametrize("num_steps,shift", [(1, 1.0), (2, 5.0), (8, 5.0), (50, 7.0), (100, 3.0)])
def test_matches_independent_float64_formula(num_steps, shift):
    s = np.linspace(1.0, 0.0, num_steps + 1)
    expected_sigmas = shift * s / (1 + (shift - 1) * s)
    timesteps, sigmas = get_schedule(num_steps, shift)
    np.testing.assert_allclose(sigmas.numpy(), expected_sigmas, rtol=0, atol=1e-6)
    np.testing.assert_allclose(timesteps.numpy(), expected_sigmas[:-1] * 1000, rtol=1e-6, atol=1e-4)
    assert sigmas[0] == 1 and sigmas[-1] == 0 and timesteps[0] == 1000
    assert torch.all(sigmas[1:] < sigmas[:-1])
    assert len(timesteps) == num_steps and len(sigmas) == num_steps + 1


def test_shift_one_is_linear():
    _, sigmas = get_schedule(4, 1.0)
    assert torch.allclose(sigmas, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))


@pytest.mark.parametrize("num_steps,shift", [(0, 5.0), (-3, 5.0), (10, 0.0), (10, -1.0)])
def test_invalid_arguments(num_steps, shift):
    with pytest.raises(ValueError):
        get_schedule(num_steps, shift)


def test_euler_step_upcasts_and_matches_float64():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 3, 4, 6, generator=g).half()
    v = torch.randn(2, 16, 3, 4, 6, generator=g).half()
    _, sigmas = get_schedule(8, 5.0)
    out = euler_step(x, v, sigmas[2], sigmas[3])
    assert out.dtype == torch.float32 and out.shape == x.shape
    expected = x.double() + v.double() * (float(sigmas[3]) - float(sigmas[2]))
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-5)
    # Python floats (e.g. sigma.item()) give the same result as the 0-d tensors.
    assert torch.equal(euler_step(x, v, sigmas[2].item(), sigmas[3].item()), out)


def test_full_euler_chain_reaches_data_for_exact_velocity():
    # With the exact flow velocity v = noise - data, integrating from sigma 1 to 0 recovers the data.
    g = torch.Generator().manual_seed(1)
    data, noise = torch.randn(1, 4, 2, 2, 2, generator=g), torch.randn(1, 4, 2, 2, 2, generator=g)
    _, sigmas = get_schedule(8, 5.0)
    x = noise.clone()
    for i in range(8):
        x = euler_step(x, noise - data, sigmas[i], sigmas[i + 1])
    torch.testing.assert_close(x, data, rtol=0, atol=1e-5)
