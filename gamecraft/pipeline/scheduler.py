"""Flow-matching Euler schedule with the SD3-style shift, as the reference's ``FlowMatchDiscreteScheduler``.

The reference (``shift=5.0, reverse=True, solver="euler"``) does, in float32:

* ``s = linspace(1, 0, n + 1)``; ``sigma = shift·s / (1 + (shift − 1)·s)`` — ``n + 1`` sigmas from 1 to 0;
* ``timesteps = sigma[:-1] · 1000`` — what the transformer receives (not divided by 1000);
* Euler step ``x ← x + v · (sigma[i+1] − sigma[i])`` with ``x`` and ``v`` upcast to float32; ``v`` is
  the model's velocity prediction (noise − data direction).

Why not diffusers' ``FlowMatchEulerDiscreteScheduler``: its default ``set_timesteps(n)`` spaces the
timesteps differently (its sigmas stop at 1/1000 before appending 0, off by up to 0.8 in sigma for
2 steps), and feeding it explicit sigmas computes the shift in float64 NumPy, which is close but not
bit-identical to the reference (timesteps off by 6e-5). These two functions reproduce the reference
exactly and are easier to read than a stateful scheduler object.
"""

from __future__ import annotations

import torch

NUM_TRAIN_TIMESTEPS = 1000


def get_schedule(
    num_steps: int, shift: float, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """The denoising schedule.

    Returns ``(timesteps, sigmas)``: ``timesteps`` [num_steps] float32 in (0, num_train_timesteps]
    (the values passed to the transformer, first one = 1000), ``sigmas`` [num_steps + 1] float32 from
    1 (pure noise) down to 0 (data). Step ``i`` goes from ``sigmas[i]`` to ``sigmas[i + 1]``.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not shift > 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    # Same op order and dtype (float32) as the reference's sd3_time_shift, so results are bit-identical.
    s = torch.linspace(1, 0, num_steps + 1)
    sigmas = (shift * s) / (1 + (shift - 1) * s)
    timesteps = (sigmas[:-1] * num_train_timesteps).to(torch.float32)
    return timesteps, sigmas


def euler_step(
    sample: torch.Tensor, velocity: torch.Tensor, sigma: torch.Tensor | float, sigma_next: torch.Tensor | float
) -> torch.Tensor:
    """One Euler step ``sample + velocity · (sigma_next − sigma)``, computed and returned in float32.

    ``sample`` and ``velocity`` have the same shape (e.g. [B, 16, T, h, w] latents); ``sigma`` and
    ``sigma_next`` are consecutive entries of the ``sigmas`` from :func:`get_schedule` (0-d tensors
    or their ``float`` values). The caller casts the result back to its latent dtype, as the
    reference writes the float32 result into its (fp16) latents.
    """
    dt = (torch.as_tensor(sigma_next, dtype=torch.float32) - torch.as_tensor(sigma, dtype=torch.float32)).to(
        sample.device
    )
    return sample.to(torch.float32) + velocity.float() * dt
