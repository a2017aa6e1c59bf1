"""Denoising one GameCraft chunk: small stateless functions (flux ``sampling.py`` style).

A chunk's latent video has ``T`` frames: the known history first, then 9 frames to generate.

* first chunk: ``T = 10`` — frame 0 is the start image's latent, frames 1–9 are generated;
* continuation: ``T = 18`` — frames 0–8 are the previous chunk's 9 latents, frames 9–17 are generated.

The transformer sees 33 channels per frame: 16 noisy latents (history frames reset to the known latents
before every step), 16 condition latents (the history, zeros elsewhere) and a 1-channel mask (1 on
history frames). Classifier-free guidance runs rows ``[uncond, cond]`` (unconditional text and Plücker
embedding first) and mixes ``u + g·(c − u)``; with guidance 1 only the cond row runs. Only generated
frames take the Euler step. Latents stay float32 between steps (the reference keeps them in fp16).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from gamecraft.model import GameCraftTransformer, PassInputs, StepCache
from gamecraft.pipeline.scheduler import euler_step
from gamecraft.specs.geometry import NEW_LATENT_FRAMES

log = logging.getLogger(__name__)


class GenerationStopped(Exception):
    """A chunk was abandoned between two denoising steps because its ``stop`` signal was set."""


@dataclass(frozen=True)
class TextConditioning:
    """Encoded prompts, rows ``[uncond, cond]`` (or ``[cond]`` without guidance).

    ``states`` [B, L, D] LLM states, ``mask`` [B, L] 0/1, ``pooled`` [B, D2] CLIP vector,
    ``lengths`` valid tokens per row as Python ints (computed once, so the step loop never syncs).
    """

    states: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor
    lengths: tuple[int, ...]

    def cond_only(self) -> TextConditioning:
        """The last (conditional) row alone."""
        return TextConditioning(self.states[-1:], self.mask[-1:], self.pooled[-1:], self.lengths[-1:])

    def to(self, device: torch.device, dtype: torch.dtype) -> TextConditioning:
        return TextConditioning(
            self.states.to(device, dtype), self.mask.to(device), self.pooled.to(device, dtype), self.lengths
        )

    def pass_inputs(self, x: torch.Tensor, t: torch.Tensor, camera_tokens: torch.Tensor, **options) -> PassInputs:
        """One transformer pass of ``x`` [B, 33, T, h, w] at timesteps ``t`` [B] under these prompts;
        ``options``: the rest of :class:`gamecraft.model.PassInputs` (rope, cache, attention_backend, …)."""
        return PassInputs(
            x=x,
            t=t,
            text_states=self.states,
            text_mask=self.mask,
            text_states_2=self.pooled,
            camera_tokens=camera_tokens,
            text_lengths=self.lengths,
            **options,
        )


@dataclass(frozen=True)
class StepInfo:
    """What a step callback sees. Tensors are live references: copy them if kept."""

    index: int
    total: int
    timestep: torch.Tensor
    cached: bool
    model_input: torch.Tensor  # [B, 33, T, h, w]
    prediction: torch.Tensor  # [B, 16, T, h, w] raw transformer output (before guidance)
    latents: torch.Tensor  # [1, 16, T, h, w] after the step
    seconds: float


def chunk_frames(history: torch.Tensor) -> int:
    """Latent frames ``T`` of a chunk whose known history is ``history`` [1, 16, 1 | 9, h, w]."""
    return history.shape[2] + NEW_LATENT_FRAMES


def condition_latents(history: torch.Tensor, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Condition channels and mask: ``gt`` [1, 16, T, h, w] (history then zeros), ``mask`` [1, 1, T, h, w]."""
    known = history.shape[2]
    gt = history.new_zeros(history.shape[0], history.shape[1], frames, *history.shape[3:])
    gt[:, :, :known] = history
    mask = history.new_zeros(history.shape[0], 1, frames, *history.shape[3:])
    mask[:, :, :known] = 1
    return gt, mask


def camera_rows(cond: torch.Tensor, uncond: torch.Tensor, guidance: bool) -> torch.Tensor:
    """Plücker input rows [B, 33, 6, H, W]: ``[uncond, cond]`` with guidance, else ``[cond]``.

    Values are rounded to bfloat16 as the reference's ``predict()`` does (kept in float32).
    """
    rows = torch.stack([uncond, cond]) if guidance else cond[None]
    return rows.to(torch.bfloat16).to(torch.float32)


def denoise_chunk(
    transformer: GameCraftTransformer,
    noise: torch.Tensor,
    history: torch.Tensor,
    text: TextConditioning,
    camera_tokens: torch.Tensor,
    timesteps: torch.Tensor,
    sigmas: torch.Tensor,
    guidance_scale: float,
    cache_flags: Sequence[bool],
    rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    attention_backend: str = "sdpa",
    on_step: Callable[[StepInfo], None] | None = None,
    stop: threading.Event | None = None,
    rows_at_once: int = 2,
) -> torch.Tensor:
    """Denoise one chunk and return its 9 new latent frames [1, 16, 9, h, w] (float32).

    ``noise`` [1, 16, T, h, w] initial latents; ``history`` [1, 16, T − 9, h, w] known latents;
    ``text`` rows and ``camera_tokens`` [B, T·h'·w', hidden] must both have B = 2 (guidance > 1) or 1;
    ``timesteps`` [n] and ``sigmas`` [n + 1] from :func:`gamecraft.pipeline.scheduler.get_schedule`;
    ``cache_flags[i]`` reuses the step cache at step ``i``. ``stop``: checked before every step; once set,
    :class:`GenerationStopped` is raised there (the caller has gone: a cancelled request). ``rows_at_once``
    1 runs the two guidance rows as two one-row passes (each with its own step cache): half the activation
    memory of a two-row pass, the same arithmetic up to the GEMMs' batch rounding.
    """
    frames = chunk_frames(history)
    if noise.shape[2] != frames:
        raise ValueError(
            f"noise has {noise.shape[2]} latent frames; a chunk with {history.shape[2]} history frames has {frames}"
        )
    known = history.shape[2]
    rows = text.states.shape[0]
    gt, mask = condition_latents(history.float(), frames)
    cond_part = torch.cat([gt, mask], dim=1)
    latents = noise.float().clone()
    # features for the step cache are kept only when a step will reuse them (0.7 GiB per row at 18 frames)
    split = rows == 2 and rows_at_once == 1
    caches = [StepCache() if any(cache_flags) else None for _ in range(rows if split else 1)]
    dtype = transformer.dtype
    for i, t in enumerate(timesteps):
        if stop is not None and stop.is_set():
            raise GenerationStopped(f"stopped before step {i + 1} of {len(timesteps)}")
        start = time.perf_counter()
        latents[:, :, :known] = history
        x = torch.cat([latents, cond_part], dim=1).expand(rows, -1, -1, -1, -1)
        inputs = text.pass_inputs(
            x.to(dtype),
            t.expand(rows).to(x.device),
            camera_tokens,
            rope=rope,
            use_cache=bool(cache_flags[i]),
            attention_backend=attention_backend,
        )
        parts = [(slice(r, r + 1), caches[r]) for r in range(rows)] if split else [(slice(0, rows), caches[0])]
        prediction = torch.cat([transformer(replace(inputs.rows(part), cache=cache)).float() for part, cache in parts])
        velocity = prediction[:1]
        if rows == 2:
            uncond, cond = prediction[0:1], prediction[1:2]
            velocity = uncond + guidance_scale * (cond - uncond)
        latents[:, :, known:] = euler_step(latents[:, :, known:], velocity[:, :, known:], sigmas[i], sigmas[i + 1])
        if on_step is not None:
            on_step(
                StepInfo(
                    i, len(timesteps), t, bool(cache_flags[i]), x, prediction, latents, time.perf_counter() - start
                )
            )
    return latents[:, :, known:]


def log_steps(chunk_index: int, device: torch.device) -> Callable[[StepInfo], None]:
    """A step callback that logs one line per step with its time and the chunk's ETA.

    It synchronizes the device once per step (after the step's work is queued) so that the times are
    real; that costs microseconds per multi-second step.
    """
    state = {"start": time.perf_counter()}

    def on_step(info: StepInfo) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - state["start"]
        eta = elapsed / (info.index + 1) * (info.total - info.index - 1)
        log.info(
            "chunk %d step %d/%d t=%.1f%s: %.2fs elapsed, ETA %.1fs",
            chunk_index + 1,
            info.index + 1,
            info.total,
            float(info.timestep),
            " (cached)" if info.cached else "",
            elapsed,
            eta,
        )

    return on_step
