"""Architecture hyper-parameters of the GameCraft transformer (HYVideo-T/2 + CameraNet)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

# Reference options this implementation reproduces. Anything else in a golden/official config is
# rejected instead of silently ignored.
_SUPPORTED_OPTIONS = {
    "mlp_act_type": ("gelu_tanh",),
    "qk_norm_type": ("rms",),
    "text_projection": ("single_refiner",),
    "multitask_mask_training_type": ("concat",),
}


@dataclass(frozen=True)
class TransformerConfig:
    """Architecture of ``HYVideoDiffusionTransformer`` as GameCraft builds it.

    The defaults are the production model (``HYVideo-T/2`` with 33-channel ``img_in``): 20 double +
    40 single blocks, hidden 3072, 24 heads of 128, RoPE dims (16, 56, 56) with theta 256,
    12,811,285,937 parameters.

    Fixed (not configurable, as in every GameCraft checkpoint): gelu-tanh MLPs, RMS QK-norm (eps
    1e-6), LayerNorm eps 1e-6, no guidance embedding, a 2-block ``single_refiner`` text projection,
    concat conditioning (latents 16 ch + condition latents 16 ch + mask 1 ch = 33 input channels).
    """

    hidden_size: int = 3072
    num_heads: int = 24
    depth_double_blocks: int = 20
    depth_single_blocks: int = 40
    mlp_width_ratio: float = 4.0
    rope_dim_list: tuple[int, int, int] = (16, 56, 56)
    rope_theta: float = 256.0
    patch_size: tuple[int, int, int] = (1, 2, 2)
    in_channels: int = 16
    out_channels: int = 16
    qkv_bias: bool = True
    text_states_dim: int = 4096
    text_states_dim_2: int = 768
    refiner_depth: int = 2
    camera_in_channels: int = 6
    camera_down_coef: int = 8
    # Size of the sinusoidal timestep features fed to the timestep MLPs.
    timestep_freq_dim: int = 256
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rope_dim_list", tuple(int(d) for d in self.rope_dim_list))
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if sum(self.rope_dim_list) != self.head_dim:
            raise ValueError(f"rope_dim_list {self.rope_dim_list} must sum to head_dim {self.head_dim}")
        if any(d % 2 for d in self.rope_dim_list):
            raise ValueError(f"rope_dim_list {self.rope_dim_list} must hold even dims (interleaved pairs)")
        if len(self.patch_size) != 3:
            raise ValueError(f"patch_size must be (t, h, w), got {self.patch_size}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_hidden_dim(self) -> int:
        return int(self.hidden_size * self.mlp_width_ratio)

    @property
    def img_in_channels(self) -> int:
        """Channels of the DiT input: noisy latents, condition latents and the mask channel."""
        return 2 * self.in_channels + 1

    @property
    def patch_volume(self) -> int:
        pt, ph, pw = self.patch_size
        return pt * ph * pw

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        return d

    @classmethod
    def production(cls) -> TransformerConfig:
        """The shipped GameCraft-1.0 model (both the 50-step and the distilled checkpoint)."""
        return cls()

    @classmethod
    def tiny(cls) -> TransformerConfig:
        """A few-hundred-thousand-parameter model with the production structure, for CPU tests."""
        return cls(
            hidden_size=64,
            num_heads=2,
            depth_double_blocks=2,
            depth_single_blocks=2,
            rope_dim_list=(8, 12, 12),
            text_states_dim=64,
            text_states_dim_2=32,
        )

    @classmethod
    def from_reference(cls, config: Mapping[str, Any]) -> TransformerConfig:
        """Build from a reference-style config dict (e.g. ``transformer.json["config"]`` of the goldens).

        Keys missing from ``config`` keep the production default; reference options this
        implementation does not reproduce raise ``ValueError``.
        """
        for key, allowed in _SUPPORTED_OPTIONS.items():
            if key in config and config[key] not in allowed:
                raise ValueError(f"unsupported {key}={config[key]!r} (supported: {allowed})")
        if config.get("guidance_embed", False):
            raise ValueError("guidance_embed=True is not supported (no GameCraft checkpoint uses it)")
        if not config.get("qk_norm", True):
            raise ValueError("qk_norm=False is not supported")
        if not config.get("use_attention_mask", True):
            raise ValueError("use_attention_mask=False is not supported (the reference always sets it)")
        if (
            "img_in_input_channels" in config
            and "in_channels" in config
            and config["img_in_input_channels"] != 2 * config["in_channels"] + 1
        ):
            raise ValueError(
                f"img_in_input_channels {config['img_in_input_channels']} != "
                f"2 * in_channels + 1 for in_channels {config['in_channels']}"
            )
        names = {f for f in cls.__dataclass_fields__ if f != "extra"}
        kwargs = {k: config[k] for k in names if k in config}
        out_channels = config.get("out_channels")
        if out_channels is None and "in_channels" in config:
            kwargs["out_channels"] = config["in_channels"]
        known = (
            names
            | set(_SUPPORTED_OPTIONS)
            | {"guidance_embed", "qk_norm", "img_in_input_channels", "use_attention_mask"}
        )
        extra = {k: v for k, v in config.items() if k not in known}
        if extra:
            logger.warning("ignoring unknown transformer config keys: %s", sorted(extra))
        return cls(**kwargs, extra=extra)

    # Alias with the name used by the parity sections and the weights writer.
    from_golden = from_reference
