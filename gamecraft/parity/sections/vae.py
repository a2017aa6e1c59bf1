"""Parity section ``vae``: encode moments / posterior / sampling / decode, untiled and tiled.

The tiny VAE is built from ``vae_tiny_config.json`` (official key names, through the same
``VaeConfig.from_official`` as real weights) and ``vae_tiny_weights.safetensors``. Every tensor listed
in ``vae.json`` is checked; its group (``<group>/<name>``) decides the input and the tiling:
groups starting with ``tiled_`` run with tiling, others without, ``decode_<n>_latent_frames`` decodes
its ``z`` with tiling (production setting). Names ending in ``_mid_block_causal_attn_False`` use the
same weights with non-causal mid-block attention. Every ``decode_of_mean`` starts from the group's
golden (causal) mean, as the goldens were made, so encode and decode errors are reported separately.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import torch

from gamecraft.model.vae import GameCraftVae
from gamecraft.model.vae_config import VaeConfig, build_model, load_state_dict_strict
from gamecraft.parity import Comparison, compare, load_manifest, load_tensors

SECTION = "vae"
_NON_CAUSAL_SUFFIX = "_mid_block_causal_attn_False"
_SEED = re.compile(r"_seed(\d+)$")


def _vae(golden_dir: Path, causal: bool, tiling: bool) -> GameCraftVae:
    raw = json.loads((golden_dir / "vae_tiny_config.json").read_text())
    config = VaeConfig.from_official({**raw, "mid_block_causal_attn": causal})
    model = build_model(config)
    load_state_dict_strict(model, load_tensors(golden_dir, "vae_tiny_weights"), "vae_tiny_weights")
    return GameCraftVae(model, config, tiling=tiling)


def check(golden_dir: Path) -> Iterator[Comparison]:
    golden_dir = Path(golden_dir)
    manifest = load_manifest(golden_dir, "vae")
    tensors = load_tensors(golden_dir, "vae")
    causal = bool(manifest["config"].get("mid_block_causal_attn", False))
    vaes: dict[tuple[bool, bool], GameCraftVae] = {}
    moments_cache: dict[tuple, torch.Tensor] = {}

    for name in manifest["tensors"]:
        group, leaf = name.split("/", 1)
        if leaf in ("input", "z"):
            continue
        variant_causal = causal
        if leaf.endswith(_NON_CAUSAL_SUFFIX):
            leaf, variant_causal = leaf[: -len(_NON_CAUSAL_SUFFIX)], False
        tiling = group.startswith("tiled_") or group.startswith("decode_")
        key = (variant_causal, tiling)
        if key not in vaes:
            vaes[key] = _vae(golden_dir, variant_causal, tiling)
        vae = vaes[key]
        expected = tensors[name]
        note = "" if variant_causal == causal else "non-causal mid-block attention"

        if leaf == "decoded":
            actual = vae.decode_raw(tensors[f"{group}/z"])
        elif leaf == "decode_of_mean":
            # The golden decodes (the non-causal one too) start from the group's causal golden mean.
            golden_mean = tensors.get(f"{group}/mean", tensors.get(f"{group}/moments"))
            if golden_mean is None:
                golden_mean = _moments(vae, tensors[f"{group}/input"], moments_cache, key)
            actual = vae.decode_raw(golden_mean[:, : vae.config.latent_channels])
        else:
            moments = _moments(vae, tensors[f"{group}/input"], moments_cache, key)
            mean, logvar = moments.chunk(2, dim=1)
            if leaf == "moments":
                actual = moments
            elif leaf == "mean":
                actual = mean
            elif leaf == "logvar_clamped":
                actual = logvar.clamp(-30.0, 20.0)
            elif leaf.startswith("sample_noise") and _SEED.search(leaf):
                seed = int(_SEED.search(leaf)[1])
                actual = vae.sample_noise(mean, torch.Generator().manual_seed(seed))
            elif leaf.startswith("sample") and _SEED.search(leaf):
                seed = int(_SEED.search(leaf)[1])
                actual = vae.sample_posterior(tensors[f"{group}/input"], torch.Generator().manual_seed(seed))
            else:
                yield Comparison(SECTION, name, float("inf"), 0, 0, False, "unknown golden tensor name")
                continue
        yield compare(SECTION, name, actual, expected, note=note)


def _moments(vae: GameCraftVae, pixels: torch.Tensor, cache: dict, key: tuple) -> torch.Tensor:
    cache_key = (*key, id(pixels))
    if cache_key not in cache:
        cache[cache_key] = vae.encode_moments(pixels)
    return cache[cache_key]
