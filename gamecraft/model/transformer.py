"""The GameCraft MM-DiT (HYVideo-T/2 with 33-channel input and CameraNet), official parameter names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn as nn

from .attention import HeadParallel, check_backend, text_lengths_from_mask
from .blocks import DoubleStreamBlock, SingleStreamBlock
from .cameranet import CameraNet, camera_tokens
from .config import TransformerConfig
from .layers import FinalLayer, MLPEmbedder, PatchEmbed, TimestepEmbedder
from .pass_inputs import PassInputs
from .refiner import SingleTokenRefiner
from .rope import rope_tables, token_grid

# Parameters the reference builds without factory kwargs: they stay float32 in a bf16 model
# (full_model_keys.json "dtype_at_construction"). Kept as data so loading and init share it.
FLOAT32_PARAMETER_PREFIXES: tuple[str, ...] = ("final_layer.linear.", "camera_net.")


def parameter_dtype(name: str, dtype: torch.dtype) -> torch.dtype:
    """Storage dtype of parameter ``name`` in a model built for compute dtype ``dtype``."""
    return torch.float32 if name.startswith(FLOAT32_PARAMETER_PREFIXES) else dtype


class TokenShard(HeadParallel, Protocol):
    """One pass over ``total`` image tokens split over a sequence-parallel group: this rank's tokens
    (``local``), the attention exchange (:class:`HeadParallel`) and the gathering of the outputs."""

    local: slice

    def gather_tokens(self, x: torch.Tensor) -> torch.Tensor: ...


class TokenParallel(Protocol):
    """A sequence-parallel group as the transformer uses it (``gamecraft.parallel.ulysses``)."""

    def shard(self, total: int) -> TokenShard: ...


class GameCraftTransformer(nn.Module):
    """Velocity prediction for a GameCraft latent chunk.

    ``dtype`` is the compute/storage dtype of all parameters except those named by
    :data:`FLOAT32_PARAMETER_PREFIXES`, which stay float32 (as in the reference). Build it on the
    ``meta`` device and load weights with :func:`gamecraft.weights.transformer.load_transformer`.
    """

    def __init__(
        self, config: TransformerConfig, dtype: torch.dtype = torch.bfloat16, device: torch.device | str | None = None
    ):
        super().__init__()
        self.config = config
        kw = dict(dtype=dtype, device=device)
        hidden, heads = config.hidden_size, config.num_heads
        self.img_in = PatchEmbed(config.patch_size, config.img_in_channels, hidden, **kw)
        self.txt_in = SingleTokenRefiner(
            config.text_states_dim, hidden, heads, config.refiner_depth, freq_dim=config.timestep_freq_dim, **kw
        )
        self.time_in = TimestepEmbedder(hidden, config.timestep_freq_dim, **kw)
        self.vector_in = MLPEmbedder(config.text_states_dim_2, hidden, **kw)
        self.double_blocks = nn.ModuleList(
            [
                DoubleStreamBlock(hidden, heads, config.mlp_hidden_dim, config.qkv_bias, **kw)
                for _ in range(config.depth_double_blocks)
            ]
        )
        self.single_blocks = nn.ModuleList(
            [SingleStreamBlock(hidden, heads, config.mlp_hidden_dim, **kw) for _ in range(config.depth_single_blocks)]
        )
        self.final_layer = FinalLayer(
            hidden,
            config.patch_volume,
            config.out_channels,
            dtype=dtype,
            linear_dtype=parameter_dtype("final_layer.linear.", dtype),
            device=device,
        )
        self.camera_net = CameraNet(
            config.camera_in_channels,
            config.camera_down_coef,
            config.in_channels,
            config.patch_size,
            hidden,
            dtype=parameter_dtype("camera_net.", dtype),
            device=device,
        )

    @property
    def dtype(self) -> torch.dtype:
        return self.img_in.proj.weight.dtype

    def camera_tokens(self, cam_latents: torch.Tensor, latent_frames: int) -> torch.Tensor:
        """Camera tokens [B, latent_frames*h*w, hidden] (float32); see :func:`camera_tokens`.

        Depends only on the camera input, so a sampler can compute it once per chunk and pass it
        to :meth:`forward` as ``camera_tokens``.
        """
        return camera_tokens(self.camera_net, cam_latents, latent_frames)

    def forward(self, inputs: PassInputs, sp: TokenParallel | None = None) -> torch.Tensor:
        """Predict the flow velocity of one pass (:class:`~gamecraft.model.pass_inputs.PassInputs` gives
        every input's shape and unit).

        ``sp``: a sequence-parallel group: this rank runs the blocks on its shard of the image tokens
        (``sp.shard(img_len).local``) and the result is gathered before the return; ``inputs.cache`` then
        holds the shard.

        Returns:
            [B, out_channels, T, h, w] velocity, in the final linear's dtype (float32).
        """
        check_backend(inputs.attention_backend)
        cfg = self.config
        x, cache = inputs.x, inputs.cache
        latent_frames, latent_h, latent_w = x.shape[2:]
        grid = token_grid(latent_frames, latent_h, latent_w, cfg)
        img_len = grid[0] * grid[1] * grid[2]
        rope = inputs.rope
        if rope is None:
            rope = rope_tables(latent_frames, latent_h, latent_w, cfg, device=x.device)
        if tuple(rope[0].shape) != (img_len, cfg.head_dim):
            raise ValueError(f"rope tables {tuple(rope[0].shape)} do not fit {img_len} image tokens")
        text_lengths = inputs.text_lengths
        if text_lengths is None:
            text_lengths = text_lengths_from_mask(inputs.text_mask)

        shard = sp.shard(img_len) if sp is not None else None
        local = shard.local if shard is not None else slice(0, img_len)
        local_len = local.stop - local.start
        if shard is not None:
            rope = (rope[0][local], rope[1][local])

        vec = self.time_in(inputs.t) + self.vector_in(inputs.text_states_2)
        if inputs.use_cache:
            if cache is None or cache.features is None:
                raise ValueError("use_cache=True needs a StepCache filled by a previous full pass")
            if cache.features.shape[:2] != (x.shape[0], local_len + inputs.text_states.shape[1]):
                raise ValueError(f"cached features {tuple(cache.features.shape)} do not fit this input")
            stream = self.single_blocks[-1](
                cache.features, vec, local_len, rope, text_lengths, inputs.attention_backend, shard
            )
        else:
            stream = self._run_blocks(inputs, vec, rope, text_lengths, local, shard)
        out = self.final_layer(stream[:, :local_len], vec)
        if shard is not None:
            out = shard.gather_tokens(out)
        return self.unpatchify(out, grid)

    def _run_blocks(
        self,
        inputs: PassInputs,
        vec: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        text_lengths: Sequence[int],
        local: slice,
        shard: TokenShard | None,
    ) -> torch.Tensor:
        """Embeddings, double and single blocks on the image tokens ``local``; ``vec`` [B, hidden] the
        timestep + pooled-text vector, ``rope`` and ``text_lengths`` resolved by :meth:`forward`.

        Returns the stream [B, local image tokens + L, hidden] (float32)."""
        backend, cache = inputs.attention_backend, inputs.cache
        tokens = inputs.camera_tokens
        if tokens is None:
            if inputs.cam_latents is None:
                raise ValueError("pass cam_latents or camera_tokens")
            tokens = self.camera_tokens(inputs.cam_latents, inputs.x.shape[2])
        img = self.img_in(inputs.x).float() + tokens.float()
        if shard is not None:
            img = img[:, local]
        txt = self.txt_in(inputs.text_states, inputs.t, inputs.text_mask, text_lengths, backend).float()
        for block in self.double_blocks:
            img, txt = block(img, txt, vec, rope, text_lengths, backend, shard)
        img_len = img.shape[1]
        stream = torch.cat((img, txt), dim=1)
        last = len(self.single_blocks) - 1
        for index, block in enumerate(self.single_blocks):
            if index == last and cache is not None:
                cache.features = stream
            stream = block(stream, vec, img_len, rope, text_lengths, backend, shard)
        return stream

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """[B, t*h*w, pt*ph*pw*C] patch outputs -> [B, C, t*pt, h*ph, w*pw] (channel-major patches)."""
        t, h, w = grid
        pt, ph, pw = self.config.patch_size
        c = self.config.out_channels
        x = x.reshape(x.shape[0], t, h, w, c, pt, ph, pw)
        x = x.permute(0, 4, 1, 5, 2, 6, 3, 7)
        return x.reshape(x.shape[0], c, t * pt, h * ph, w * pw)
