"""The causal 3D VAE's configuration and construction: the official ``config.json``
(``AutoencoderKLCausal3D`` names) validated, diffusers' ``AutoencoderKLHunyuanVideo`` built from it on the
meta device, and filled strictly from a state dict (the runtime wrapper: :mod:`gamecraft.model.vae`).

diffusers' mid block is always frame-causal; a config with ``mid_block_causal_attn: false`` (the
reference's constructor default) gets a forward pre-hook that drops the mask.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import AutoencoderKLHunyuanVideo

logger = logging.getLogger(__name__)

OFFICIAL_CLASS_NAME = "AutoencoderKLCausal3D"
_BLOCK_TYPES = {
    "down": ("DownEncoderBlockCausal3D", "HunyuanVideoDownBlock3D"),
    "up": ("UpDecoderBlockCausal3D", "HunyuanVideoUpBlock3D"),
}
_SUPPORTED_ACTIVATIONS = ("silu", "swish", "mish", "gelu", "relu")
# Official config keys that only drive machinery we do not use (TensorRT, multi-GPU decode, training).
_IGNORED_KEYS = (
    "_class_name",
    "_diffusers_version",
    "_name_or_path",
    "force_upcast",
    "use_trt_engine",
    "nccl_gather",
    "engine_path",
)


@dataclass(frozen=True)
class VaeConfig:
    """The official ``config.json`` (``AutoencoderKLCausal3D`` names), validated.

    ``sample_size`` is the spatial tile in pixels, ``sample_tsize`` the frame count above which the
    reference would tile time. ``scaling_factor`` maps posterior samples to diffusion latents.
    """

    block_out_channels: tuple[int, ...]
    layers_per_block: int
    latent_channels: int
    norm_num_groups: int
    sample_size: int
    sample_tsize: int
    scaling_factor: float
    in_channels: int = 3
    out_channels: int = 3
    act_fn: str = "silu"
    time_compression_ratio: int = 4
    spatial_compression_ratio: int = 8
    mid_block_add_attention: bool = True
    mid_block_causal_attn: bool = False  # the reference's default when config.json omits it

    @classmethod
    def from_official(cls, raw: Mapping[str, Any]) -> VaeConfig:
        """Map and validate an official config dict; unknown or unsupported values raise ``ValueError``."""
        raw = dict(raw)
        if raw.get("_class_name", OFFICIAL_CLASS_NAME) != OFFICIAL_CLASS_NAME:
            raise ValueError(f"VAE config: _class_name {raw['_class_name']!r}, expected {OFFICIAL_CLASS_NAME!r}")
        if raw.pop("disable_causal_conv", False):
            raise ValueError(
                "VAE config: disable_causal_conv=true is not supported (diffusers' HunyuanVideo "
                "VAE only has causal convolutions)"
            )
        for kind, (official, _) in _BLOCK_TYPES.items():
            types = raw.pop(f"{kind}_block_types", None)
            if types is None or any(t != official for t in types):
                raise ValueError(f"VAE config: {kind}_block_types must all be {official!r}, got {types!r}")
            if len(types) != len(raw.get("block_out_channels", ())):
                raise ValueError(
                    f"VAE config: {len(types)} {kind}_block_types for "
                    f"{len(raw.get('block_out_channels', ()))} block_out_channels"
                )
        if "mid_block_causal_attn" not in raw:
            logger.warning(
                "VAE config.json has no mid_block_causal_attn; using the reference default False "
                "(non-causal mid-block attention)"
            )
        for key in _IGNORED_KEYS:
            raw.pop(key, None)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        missing = sorted(
            k
            for k in (
                "block_out_channels",
                "layers_per_block",
                "latent_channels",
                "norm_num_groups",
                "sample_size",
                "sample_tsize",
                "scaling_factor",
            )
            if k not in raw
        )
        if unknown or missing:
            raise ValueError(f"VAE config: unknown keys {unknown}, missing keys {missing}")
        if not isinstance(raw["sample_size"], int):
            raise ValueError(f"VAE config: sample_size must be one int (square tiles), got {raw['sample_size']!r}")
        if raw.get("act_fn", "silu") not in _SUPPORTED_ACTIVATIONS:
            raise ValueError(f"VAE config: act_fn {raw['act_fn']!r} not in {_SUPPORTED_ACTIVATIONS}")
        config = cls(**{**raw, "block_out_channels": tuple(raw["block_out_channels"])})
        if config.spatial_compression_ratio != 2 ** (len(config.block_out_channels) - 1):
            # The reference sizes latent tiles by the block count; both must agree or its tiles misalign.
            raise ValueError(
                f"VAE config: spatial_compression_ratio {config.spatial_compression_ratio} "
                f"!= 2**(blocks-1) = {2 ** (len(config.block_out_channels) - 1)}"
            )
        return config

    def to_official(self) -> dict[str, Any]:
        """The official ``config.json`` dict (what :func:`from_official` reads back)."""
        return {
            "_class_name": OFFICIAL_CLASS_NAME,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "down_block_types": [_BLOCK_TYPES["down"][0]] * len(self.block_out_channels),
            "up_block_types": [_BLOCK_TYPES["up"][0]] * len(self.block_out_channels),
            "block_out_channels": list(self.block_out_channels),
            "layers_per_block": self.layers_per_block,
            "act_fn": self.act_fn,
            "latent_channels": self.latent_channels,
            "norm_num_groups": self.norm_num_groups,
            "sample_size": self.sample_size,
            "sample_tsize": self.sample_tsize,
            "scaling_factor": self.scaling_factor,
            "time_compression_ratio": self.time_compression_ratio,
            "spatial_compression_ratio": self.spatial_compression_ratio,
            "mid_block_add_attention": self.mid_block_add_attention,
            "mid_block_causal_attn": self.mid_block_causal_attn,
        }

    @property
    def tile_latent_size(self) -> int:
        """Spatial tile size in latents, computed as the reference does."""
        return int(self.sample_size / (2 ** (len(self.block_out_channels) - 1)))


def build_model(config: VaeConfig) -> AutoencoderKLHunyuanVideo:
    """diffusers' VAE with ``config``'s structure, parameters on the meta device (no memory, no random
    init); fill it with :func:`load_state_dict_strict`."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = AutoencoderKLHunyuanVideo(
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            latent_channels=config.latent_channels,
            down_block_types=(_BLOCK_TYPES["down"][1],) * len(config.block_out_channels),
            up_block_types=(_BLOCK_TYPES["up"][1],) * len(config.block_out_channels),
            block_out_channels=config.block_out_channels,
            layers_per_block=config.layers_per_block,
            act_fn=config.act_fn,
            norm_num_groups=config.norm_num_groups,
            scaling_factor=config.scaling_factor,
            spatial_compression_ratio=config.spatial_compression_ratio,
            temporal_compression_ratio=config.time_compression_ratio,
            mid_block_add_attention=config.mid_block_add_attention,
        )
    if config.mid_block_add_attention and not config.mid_block_causal_attn:
        for mid_block in (model.encoder.mid_block, model.decoder.mid_block):
            for attention in mid_block.attentions:
                if attention is not None:
                    attention.register_forward_pre_hook(_drop_attention_mask, with_kwargs=True)
    return model.eval().requires_grad_(False)


def _drop_attention_mask(module, args, kwargs):
    # diffusers passes a frame-causal mask; the reference's non-causal mid block attends to all tokens.
    return args, {**kwargs, "attention_mask": None}


def load_state_dict_strict(
    model: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> None:
    """Fill a (meta) model with ``state_dict`` in ``dtype`` on ``device``; names must match exactly
    (the error lists missing/unexpected keys) and shapes too."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(k for k in expected if k in state_dict and state_dict[k].shape != expected[k].shape)
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{source}: state dict does not match the model: {len(missing)} missing keys "
            f"{missing[:20]}, {len(unexpected)} unexpected keys {unexpected[:20]}, "
            f"{len(mismatched)} shape mismatches {mismatched[:20]}"
        )
    model.load_state_dict(
        {k: v.to(device=device, dtype=dtype) for k, v in state_dict.items()}, strict=True, assign=True
    )
