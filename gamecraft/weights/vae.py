"""Loading the VAE from the official ``stdmodels/vae_3d/hyvae`` files (``pytorch_model.pt`` + ``config.json``)."""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

from gamecraft.model.vae import GameCraftVae
from gamecraft.model.vae_config import VaeConfig, build_model, load_state_dict_strict

from .layout import DEFAULT_LAYOUT, WeightsLayout

logger = logging.getLogger(__name__)


def read_official_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """VAE tensors from the official ``pytorch_model.pt``: keys ``vae.*`` (optionally under
    ``"state_dict"``), prefix stripped; other keys are ignored as the reference does."""
    try:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            ckpt = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) container
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"refusing to load {path}: not a plain tensor checkpoint (loading it would need "
            f"unrestricted unpickling): {err}"
        ) from None
    if isinstance(ckpt, Mapping) and isinstance(ckpt.get("state_dict"), Mapping):
        ckpt = ckpt["state_dict"]
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"{path}: expected a dict of tensors, got {type(ckpt).__name__}")
    tensors = {key[len("vae.") :]: value for key, value in ckpt.items() if key.startswith("vae.")}
    if not tensors:
        raise ValueError(f"{path}: no 'vae.'-prefixed keys (found e.g. {sorted(ckpt)[:5]})")
    if len(tensors) != len(ckpt):
        logger.info("%s: ignoring %d keys without the 'vae.' prefix", path, len(ckpt) - len(tensors))
    return tensors


def load_vae(
    weights_dir: Path,
    layout: WeightsLayout | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float16,
    *,
    tiling: bool = True,
    mid_block_causal_attn: bool | None = None,
) -> GameCraftVae:
    """Load the VAE from a weights directory in the official layout (``gamecraft.weights``).

    ``dtype`` float16 is the reference's production precision, float32 the parity one.
    ``mid_block_causal_attn`` overrides the config value (``None``: config, else reference default).
    """
    layout = layout or DEFAULT_LAYOUT
    config_path = Path(weights_dir) / layout.vae_config
    weights_path = Path(weights_dir) / layout.vae_weights
    for path, what in ((config_path, "VAE config"), (weights_path, "VAE weights")):
        if not path.is_file():
            raise FileNotFoundError(f"{what} not found: expected {path}")
    raw = json.loads(config_path.read_text())
    if mid_block_causal_attn is not None:
        raw["mid_block_causal_attn"] = mid_block_causal_attn
    config = VaeConfig.from_official(raw)
    model = build_model(config)
    load_state_dict_strict(model, read_official_checkpoint(weights_path), str(weights_path), device, dtype)
    logger.info(
        "loaded VAE from %s (%s, %s, mid-block attention %scausal)",
        weights_path,
        device,
        dtype,
        "" if config.mid_block_causal_attn else "non-",
    )
    return GameCraftVae(model, config, tiling=tiling)
