"""The causal 3D VAE (HunyuanVideo ``884-16c-hy0801``): diffusers' model, the reference's tiling and sampling.

Weights and modules come from diffusers' ``AutoencoderKLHunyuanVideo``, whose state dict has the same
keys as the official ``AutoencoderKLCausal3D`` (the official ``pytorch_model.pt`` only adds a ``vae.``
prefix). What diffusers does differently from the reference, and is therefore done here:

* **Spatial tiling** with the reference's own arithmetic: tiles of ``sample_size`` px
  (``sample_size / 2**(blocks−1)`` latents), stride ``int(0.75·sample_size)`` px /
  ``int(0.75·tile_latents)`` latents, blend ``int(0.25·tile)`` rows/columns linearly (top→bottom, then
  left→right, in place, as the reference) and keep the first ``tile − blend`` of each tile. diffusers
  derives its strides differently, which only agrees for some sizes, and tiles time by default.
* **No temporal tiling**: the reference only tiles time above ``sample_tsize`` frames (64 frames /
  16 latents), which GameCraft never reaches (33 frames ↔ 9 latents); longer inputs are refused.
* **Mid-block attention causality** follows the config's ``mid_block_causal_attn``; diffusers' mid
  block is always frame-causal, so the non-causal variant drops the mask with a forward pre-hook.
  A config without the key gets the reference's constructor default, ``False``.
* **Posterior sampling** (the reference *samples* the image latent, quirk Q3) from a caller-provided
  ``torch.Generator``, then rounds to fp16 and scales in fp16 like ``sample_batch.py``.

Precision: the VAE is built in an explicit dtype. Below float32, encode/decode run under
``torch.autocast(dtype)`` as the reference does (its GroupNorm/softmax then run in float32).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from diffusers import AutoencoderKLHunyuanVideo

from gamecraft.model.vae_config import VaeConfig
from gamecraft.model.vae_tiles import blend_tiles, split_tiles

# Decodes a list of unscaled latent tiles (GameCraftVae.decode_tile each), returning them in order.
TileDecoder = Callable[[list[torch.Tensor]], list[torch.Tensor]]
TILE_OVERLAP = 0.25  # reference tile_overlap_factor (tiles: gamecraft.model.vae_tiles)
LOGVAR_RANGE = (-30.0, 20.0)  # reference DiagonalGaussianDistribution clamp


class GameCraftVae:
    """The VAE as the pipeline uses it.

    Pixels are ``[B, 3, T, H, W]`` in [−1, 1] with ``T = 1 + 4k`` and ``H, W`` multiples of 8;
    latents are ``[B, C, 1 + (T−1)/4, H/8, W/8]``. ``tiling`` (on in production) selects the reference's
    spatial tiling for inputs larger than one tile.
    """

    def __init__(self, model: AutoencoderKLHunyuanVideo, config: VaeConfig, tiling: bool = True):
        self.model = model
        self.config = config
        self.tiling = tiling
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = None  # see compile_decoder
        self._compiled_scope = "full"

    def compile_decoder(self, scope: str = "full", backend="inductor") -> None:
        """Decode tiles through ``torch.compile`` (static shapes), which fuses the float32 group norms,
        activations and causal-padding copies around the convolutions: on an H200 a chunk decodes 1.8×
        faster with ``"full"`` and 2.2× with ``"all"`` (BENCHMARKS.md), within fp16 rounding of eager.

        ``scope="full"`` compiles only the full ``tile × tile`` latent tiles (82 % of the decode work at
        704×1216; one graph, ≈ 21 s to compile) and leaves the smaller edge tiles eager; ``"all"``
        compiles every tile shape (four graphs at 704×1216, ≈ 90 s). ``backend``: ``torch.compile``'s.
        """
        if scope not in ("full", "all"):
            raise ValueError(f"scope must be 'full' or 'all', got {scope!r}")
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 16)
        self._compiled = torch.compile(self.model.decoder, dynamic=False, backend=backend)
        self._compiled_scope = scope

    def uncompile_decoder(self) -> None:
        """Back to the eager decoder (e.g. when compilation fails at warm-up)."""
        self._compiled = None

    @property
    def decoder_compiled(self) -> bool:
        return self._compiled is not None

    @property
    def device(self) -> torch.device:
        return self.model.quant_conv.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.quant_conv.weight.dtype

    def autocast(self):
        """The reference's fp16 autocast for the VAE (nothing in float32)."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    # -- encode ------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_moments(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, 3, T, H, W]`` in [−1, 1] → posterior moments ``[B, 2C, T', H/8, W/8]`` (mean ‖ raw logvar)."""
        if pixels.ndim != 5:
            raise ValueError(f"expected pixels [B, 3, T, H, W], got shape {tuple(pixels.shape)}")
        frames, height, width = pixels.shape[2:]
        tile = self.config.sample_size
        if self.tiling and frames > self.config.sample_tsize:
            raise ValueError(
                f"{frames} frames: the reference would tile time above {self.config.sample_tsize} "
                "frames, which is not implemented"
            )
        x = pixels.to(self.device, self.dtype)
        with self.autocast():
            if self.tiling and (height > tile or width > tile):
                return self._tiled_encode(x)
            return self.model.quant_conv(self.model.encoder(x))

    def _tiled_encode(self, x: torch.Tensor) -> torch.Tensor:
        tile = self.config.sample_size
        stride = int(tile * (1 - TILE_OVERLAP))
        blend = int(self.config.tile_latent_size * TILE_OVERLAP)
        keep = self.config.tile_latent_size - blend
        rows = [[self.model.quant_conv(self.model.encoder(t)) for t in row] for row in split_tiles(x, tile, stride)]
        return blend_tiles(rows, blend, keep)

    def posterior(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)`` of the diagonal Gaussian posterior, each ``[B, C, T', h, w]``."""
        mean, logvar = self.encode_moments(pixels).chunk(2, dim=1)
        with self.autocast():  # the reference builds the posterior inside autocast: exp runs in float32
            return mean, torch.exp(0.5 * logvar.clamp(*LOGVAR_RANGE))

    def sample_noise(self, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Standard-normal noise shaped like ``like``, drawn on the generator's device in ``like``'s dtype
        (as diffusers' ``randn_tensor`` in the reference's ``latent_dist.sample``), moved to ``like``."""
        noise = torch.randn(like.shape, generator=generator, device=generator.device, dtype=like.dtype)
        return noise.to(like.device)

    def sample_posterior(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``mean + std · noise`` ``[B, C, T', h, w]`` (unscaled, not rounded), noise from ``generator``."""
        mean, std = self.posterior(pixels)
        return mean + std * self.sample_noise(mean, generator)

    def encode(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Conditioning latents as the reference makes them (sample_batch.py, quirk Q3).

        A posterior *sample* ``mean + std·noise`` (noise from ``generator``) rounded to float16, then
        multiplied by ``scaling_factor`` in float16. ``pixels`` ``[B, 3, T, H, W]`` in [−1, 1] → float16
        ``[B, C, 1 + (T−1)/4, H/8, W/8]``; an image is ``T = 1``, a 33-frame clip gives 9 latents.
        """
        return self.sample_posterior(pixels, generator).to(torch.float16) * self.config.scaling_factor

    def encode_image(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``[B, 3, 1, H, W]`` in [−1, 1] → float16 ``[B, C, 1, H/8, W/8]`` (see :meth:`encode`)."""
        if image.ndim != 5 or image.shape[2] != 1:
            raise ValueError(f"expected an image [B, 3, 1, H, W], got shape {tuple(image.shape)}")
        return self.encode(image, generator)

    def encode_video(self, video: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``[B, 3, T, H, W]`` (``T = 1 + 4k``, e.g. 33) → float16 ``[B, C, 1 + k, H/8, W/8]``
        (see :meth:`encode`)."""
        frames = video.shape[2]
        if video.ndim != 5 or (frames - 1) % self.config.time_compression_ratio:
            raise ValueError(
                f"expected a video [B, 3, 1 + {self.config.time_compression_ratio}k, H, W], "
                f"got shape {tuple(video.shape)}"
            )
        return self.encode(video, generator)

    # -- decode ------------------------------------------------------------------------------
    @torch.no_grad()
    def decode_raw(self, z: torch.Tensor, tile_decoder: TileDecoder | None = None) -> torch.Tensor:
        """Unscaled latents ``[B, C, T', h, w]`` → decoder output ``[B, 3, 1 + 4(T'−1), 8h, 8w]``
        (≈ [−1, 1]). ``tile_decoder`` decodes the list of spatial tiles (default: one after another
        here; the multi-GPU engine spreads them over its GPUs)."""
        if z.ndim != 5:
            raise ValueError(f"expected latents [B, C, T, h, w], got shape {tuple(z.shape)}")
        tile = self.config.tile_latent_size
        max_latent_frames = self.config.sample_tsize // self.config.time_compression_ratio
        if self.tiling and z.shape[2] > max_latent_frames:
            raise ValueError(
                f"{z.shape[2]} latent frames: the reference would tile time above "
                f"{max_latent_frames}, which is not implemented; decode in chunks"
            )
        z = z.to(self.device, self.dtype)
        with self.autocast():
            if self.tiling and (z.shape[-1] > tile or z.shape[-2] > tile):
                return self._tiled_decode(z, tile_decoder)
            return self.decode_tile(z)

    def _tiled_decode(self, z: torch.Tensor, tile_decoder: TileDecoder | None) -> torch.Tensor:
        tile = self.config.tile_latent_size
        stride = int(tile * (1 - TILE_OVERLAP))
        blend = int(self.config.sample_size * TILE_OVERLAP)
        keep = self.config.sample_size - blend
        grid = split_tiles(z, tile, stride)
        flat = [t for row in grid for t in row]
        decoded = tile_decoder(flat) if tile_decoder is not None else [self.decode_tile(t) for t in flat]
        columns = len(grid[0])
        rows = [decoded[r * columns : (r + 1) * columns] for r in range(len(grid))]
        return blend_tiles(rows, blend, keep)

    def decode_tile(self, z: torch.Tensor) -> torch.Tensor:
        """One unscaled latent tile [B, C, T', h, w] → decoder output [B, 3, 1 + 4(T'−1), 8h, 8w]
        (call inside :meth:`autocast`)."""
        decoder = self.model.decoder
        if self._compiled is not None and (
            self._compiled_scope == "all" or z.shape[-2:] == (self.config.tile_latent_size,) * 2
        ):
            decoder = self._compiled
        return decoder(self.model.post_quant_conv(z))

    def decoded_tile_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """Shape :meth:`decode_tile` returns for a latent tile of ``shape``."""
        batch, _, frames, h, w = shape
        ratio = self.config.spatial_compression_ratio
        return (batch, 3, 1 + self.config.time_compression_ratio * (frames - 1), h * ratio, w * ratio)

    def decode(self, latents: torch.Tensor, tile_decoder: TileDecoder | None = None) -> torch.Tensor:
        """Diffusion latents ``[B, C, N, h, w]`` → frames ``[B, 3, 1 + 4(N−1), 8h, 8w]`` float32 in [0, 1].

        As the reference: divide by ``scaling_factor`` in the latents' dtype, decode, then
        ``(x / 2 + 0.5).clamp(0, 1)`` in the decoder's dtype, returned as float32 on the VAE's device.
        """
        frames = self.decode_raw(latents / self.config.scaling_factor, tile_decoder)
        return (frames / 2 + 0.5).clamp(0, 1).float()
