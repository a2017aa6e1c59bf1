"""The world session: chunk after chunk, each conditioned on the last, resumable across requests.

A :class:`WorldSession` owns the state of one world (``gamecraft.pipeline.state.WorldState``) and the encoded
prompt; :meth:`WorldSession.generate_chunk` turns one chunk of camera motion into 33 new frames:

1. Plücker embeddings of the chunk's poses (cond, and identity poses for the unconditional row);
2. initial noise from the prediction's own seed — ``derive_seed(seed, "chunk", index)`` — so chunk
   ``k`` of a continued world gets exactly the noise it would get in an uninterrupted run;
3. :func:`gamecraft.pipeline.sampling.denoise_chunk` with the preset's schedule, guidance and step cache;
4. the 9 new latents become the history of the next chunk and are decoded to 33 frames.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from gamecraft.model import GameCraftTransformer, rope_tables
from gamecraft.model.vae import GameCraftVae
from gamecraft.pipeline.camera import ChunkPoses, chunk_plucker
from gamecraft.pipeline.frames import frames_to_host
from gamecraft.pipeline.presets import Preset, step_cache_flags
from gamecraft.pipeline.sampling import StepInfo, TextConditioning, camera_rows, chunk_frames, denoise_chunk, log_steps
from gamecraft.pipeline.scheduler import get_schedule
from gamecraft.pipeline.state import WorldState
from gamecraft.specs.geometry import LATENT_CHANNELS, latent_size

log = logging.getLogger(__name__)


class SessionEngine(Protocol):
    """The part of ``gamecraft.engine.Engine`` a session uses (the pipeline layer sits below the engine, so
    it names what it needs structurally instead of importing it)."""

    device: torch.device
    attention_backend: str
    go_fast_attention_backend: str  # the kernel go_fast (``preset.go_fast``) uses
    rows_at_once: int  # guidance rows per transformer call (1 on GPUs short of memory)

    def transformer(self, variant: str, go_fast: bool = False) -> GameCraftTransformer: ...

    def encode_text(self, prompt: str, negative_prompt: str, guidance: bool) -> TextConditioning: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...


def derive_seed(seed: int, *labels: object) -> int:
    """A 63-bit seed for the stream named by ``labels`` (e.g. ``("chunk", 3)``), independent per stream."""
    digest = hashlib.sha256(":".join(map(str, (seed, *labels))).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def cpu_generator(seed: int, *labels: object) -> torch.Generator:
    """A CPU generator for one stream: noise is drawn on the CPU so a seed means the same on any device."""
    return torch.Generator("cpu").manual_seed(derive_seed(seed, *labels))


def chunk_noise(seed: int, chunk_index: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Initial latents of chunk ``chunk_index`` [1, 16, T, h, w] float32 (CPU)."""
    return torch.randn(shape, generator=cpu_generator(seed, "chunk", chunk_index), dtype=torch.float32)


@dataclass
class ChunkResult:
    """One generated chunk: ``frames`` [33, H, W, 3] on the CPU, uint8 (or float32 in [0, 1], see
    :attr:`WorldSession.frames_dtype`); ``latents`` [1, 16, 9, h, w]."""

    index: int
    label: str
    frames: torch.Tensor
    latents: torch.Tensor
    seconds_denoise: float
    seconds_decode: float


def encode_start_image(vae: GameCraftVae, pixels: torch.Tensor, seed: int) -> torch.Tensor:
    """Start image [1, 3, 1, H, W] in [−1, 1] → its conditioning latent [1, 16, 1, h, w] (float16, scaled).

    The reference samples the VAE posterior (quirk Q3); the noise comes from the prediction's seed.
    """
    return vae.encode_image(pixels, cpu_generator(seed, "image"))


def encode_start_video(vae: GameCraftVae, clip: torch.Tensor, seed: int) -> torch.Tensor:
    """A video start: its last 33 frames [1, 3, 33, H, W] in [−1, 1] → 9 history latents [1, 16, 9, h, w]."""
    return vae.encode_video(clip, cpu_generator(seed, "video"))


class WorldSession:
    """One world: the encoded prompt, the preset and the evolving :class:`WorldState`.

    ``frames_dtype``: how :meth:`generate_chunk` returns frames — uint8 (what every writer needs) or
    float32 in [0, 1] (what the parity checks compare).
    """

    frames_dtype: torch.dtype = torch.uint8

    def __init__(self, engine: SessionEngine, preset: Preset, state: WorldState, text: TextConditioning):
        self.engine = engine
        self.preset = preset
        self.state = state
        self.text = text
        self._rope: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def start(
        cls,
        engine: SessionEngine,
        preset: Preset,
        prompt: str,
        seed: int,
        height: int,
        width: int,
        *,
        history: torch.Tensor,
        negative_prompt: str = "",
        chunks_done: int = 0,
        pose=None,
        actions=(),
    ) -> WorldSession:
        """A session from known history latents (an encoded image or video, or a loaded state)."""
        latent_size(height, width)
        state = WorldState(
            last_latents=history.float().cpu(),
            height=height,
            width=width,
            seed=seed,
            chunks_done=chunks_done,
            prompt=prompt,
            pose=np.eye(4).tolist() if pose is None else pose,
            actions=list(actions),
        )
        text = engine.encode_text(prompt, negative_prompt, preset.uses_cfg)
        return cls(engine, preset, state, text)

    def _rope_for(self, frames: int, transformer: GameCraftTransformer) -> tuple[torch.Tensor, torch.Tensor]:
        if frames not in self._rope:
            h, w = latent_size(self.state.height, self.state.width)
            self._rope[frames] = rope_tables(frames, h, w, transformer.config, device=self.engine.device)
        return self._rope[frames]

    def _attention_backend(self) -> str:
        if self.preset.go_fast:
            return self.engine.go_fast_attention_backend
        return self.engine.attention_backend

    def generate_chunk(
        self,
        poses: ChunkPoses,
        label: str = "",
        noise: torch.Tensor | None = None,
        on_step: Callable[[StepInfo], None] | None = None,
        stop: threading.Event | None = None,
    ) -> ChunkResult:
        """Generate the next chunk along ``poses``; updates :attr:`state` (only once the chunk is complete).

        ``noise`` overrides the seeded noise; ``on_step`` sees every denoising step (default: one log line
        each); ``stop``, once set, ends the chunk between two steps with :class:`GenerationStopped`."""
        state, preset, device = self.state, self.preset, self.engine.device
        index = state.chunks_done
        transformer = self.engine.transformer(preset.variant, go_fast=preset.go_fast)
        history = state.last_latents.to(device)
        frames = chunk_frames(history)
        h, w = latent_size(state.height, state.width)
        if noise is None:
            noise = chunk_noise(state.seed, index, (1, LATENT_CHANNELS, frames, h, w))
        start = time.perf_counter()
        cond, uncond = chunk_plucker(poses, state.height, state.width, device=device)
        with torch.no_grad():
            cam = camera_rows(cond, uncond, preset.uses_cfg)
            tokens = transformer.camera_tokens(cam, frames)
            timesteps, sigmas = get_schedule(preset.num_inference_steps, preset.flow_shift)
            latents = denoise_chunk(
                transformer,
                noise.to(device),
                history,
                self.text,
                tokens,
                timesteps.to(device),
                sigmas,
                preset.guidance_scale,
                step_cache_flags(preset.num_inference_steps, preset.step_cache),
                rope=self._rope_for(frames, transformer),
                attention_backend=self._attention_backend(),
                on_step=on_step or log_steps(index, device),
                stop=stop,
                rows_at_once=self.engine.rows_at_once,
            )
            denoised = time.perf_counter()
            video = self.engine.decode(latents)  # [1, 3, 33, H, W] in [0, 1]
        frames_out = frames_to_host(video[0], self.frames_dtype)
        decoded = time.perf_counter()
        state.last_latents = latents.float().cpu()
        state.chunks_done += 1
        state.pose = (np.asarray(state.pose) @ poses.advance).tolist()
        state.actions.append(label)
        log.info(
            "chunk %d (%s) done: denoise %.2fs, decode %.2fs",
            index + 1,
            label or "custom",
            denoised - start,
            decoded - denoised,
        )
        return ChunkResult(index, label, frames_out, state.last_latents, denoised - start, decoded - denoised)
