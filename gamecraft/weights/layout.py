"""Where the weights live: the official layout of ``tencent/Hunyuan-GameCraft-1.0`` and its checks.

A weights directory mirrors the Hugging Face repository (paths relative to the directory)::

    gamecraft_models/mp_rank_00_model_states.pt          transformer, full model ({"module": state_dict})
    gamecraft_models/mp_rank_00_model_states_distill.pt  transformer, distilled model
    stdmodels/vae_3d/hyvae/{pytorch_model.pt,config.json}          causal 3D VAE ("vae."-prefixed keys)
    stdmodels/llava-llama-3-8b-v1_1-transformers/        LLaVA-Llama-3-8B (only the language model is used)
    stdmodels/openai_clip-vit-large-patch14/             CLIP-L (only the text model is used)

The loaders (:mod:`.vae`, :mod:`.text`, :mod:`.transformer`) take a directory plus a :class:`WeightsLayout`,
so the real weights and the tiny random ones written by ``gamecraft.testing.tiny_weights``
(``python -m gamecraft.testing write-tiny DIR``) go through the same code.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from gamecraft.model import TransformerConfig

logger = logging.getLogger(__name__)

REPO_ID = "tencent/Hunyuan-GameCraft-1.0"
VARIANTS = ("full", "distilled")
# Not in the official repository (its checkpoints are all the production architecture): written by
# write_tiny_weights with the tiny transformer's architecture (TransformerConfig fields).
TRANSFORMER_CONFIG_FILE = "gamecraft_models/transformer_config.json"


@dataclass(frozen=True)
class WeightsLayout:
    """Relative paths of every component inside a weights directory (defaults: the official repo)."""

    transformer_full: str = "gamecraft_models/mp_rank_00_model_states.pt"
    transformer_distilled: str = "gamecraft_models/mp_rank_00_model_states_distill.pt"
    vae_weights: str = "stdmodels/vae_3d/hyvae/pytorch_model.pt"
    vae_config: str = "stdmodels/vae_3d/hyvae/config.json"
    llava_dir: str = "stdmodels/llava-llama-3-8b-v1_1-transformers"
    clip_dir: str = "stdmodels/openai_clip-vit-large-patch14"

    def transformer(self, variant: str) -> str:
        """The transformer checkpoint of ``variant`` (``"full"`` or ``"distilled"``)."""
        if variant not in VARIANTS:
            raise ValueError(f"unknown weights variant {variant!r}; expected one of {', '.join(VARIANTS)}")
        return self.transformer_full if variant == "full" else self.transformer_distilled

    def required_files(self, variant: str, weights_dir: Path | None = None) -> dict[str, str]:
        """``{description: relative path}`` of every file ``variant`` needs.

        With ``weights_dir``, a sharded LLaVA checkpoint's index is read to list its shards too.
        """
        files = {
            f"transformer ({variant})": self.transformer(variant),
            "VAE weights": self.vae_weights,
            "VAE config": self.vae_config,
            "LLaVA config": f"{self.llava_dir}/config.json",
            "LLaVA tokenizer": f"{self.llava_dir}/tokenizer.json",
            "LLaVA tokenizer config": f"{self.llava_dir}/tokenizer_config.json",
            "CLIP config": f"{self.clip_dir}/config.json",
            "CLIP vocabulary": f"{self.clip_dir}/vocab.json",
            "CLIP merges": f"{self.clip_dir}/merges.txt",
            "CLIP weights": f"{self.clip_dir}/model.safetensors",
        }
        index = f"{self.llava_dir}/model.safetensors.index.json"
        if weights_dir is not None and (Path(weights_dir) / index).is_file():
            files["LLaVA weights index"] = index
            shards = sorted(set(json.loads((Path(weights_dir) / index).read_text())["weight_map"].values()))
            for shard in shards:
                files[f"LLaVA weights shard {shard}"] = f"{self.llava_dir}/{shard}"
        else:
            files["LLaVA weights"] = f"{self.llava_dir}/model.safetensors"
        return files

    def allow_patterns(self, variant: str) -> list[str]:
        """``snapshot_download`` patterns for exactly what ``variant`` needs (no other transformer,
        no TF/Flax/PyTorch-pickle duplicates of the text encoders)."""
        return [
            self.transformer(variant),
            self.vae_weights,
            self.vae_config,
            f"{self.llava_dir}/*.json",
            f"{self.llava_dir}/*.safetensors",
            f"{self.clip_dir}/*.json",
            f"{self.clip_dir}/*.txt",
            f"{self.clip_dir}/*.safetensors",
        ]


DEFAULT_LAYOUT = WeightsLayout()


class MissingWeightsError(FileNotFoundError):
    """Some files of a weights directory are missing; the message names each one and its path."""


def check_layout(weights_dir: Path, variant: str, layout: WeightsLayout = DEFAULT_LAYOUT) -> None:
    """Raise :class:`MissingWeightsError` naming every file ``variant`` needs that ``weights_dir`` lacks."""
    weights_dir = Path(weights_dir)
    missing = [
        (what, rel)
        for what, rel in layout.required_files(variant, weights_dir).items()
        if not (weights_dir / rel).is_file()
    ]
    if missing:
        lines = "\n".join(f"  - {what}: expected {rel} ({weights_dir / rel})" for what, rel in missing)
        raise MissingWeightsError(
            f"weights directory {weights_dir} is incomplete for variant {variant!r}: "
            f"{len(missing)} missing file(s)\n{lines}\n"
            f"Download them with gamecraft.weights.download_weights (repo {REPO_ID})."
        )


def smoke_run_reason(
    weights_dir: Path, variant: str, cuda_available: bool, layout: WeightsLayout = DEFAULT_LAYOUT
) -> str | None:
    """Why the real model cannot run here (then entry points fall back to tiny weights), or ``None``."""
    if not cuda_available:
        return "no CUDA GPU"
    try:
        check_layout(weights_dir, variant, layout)
    except MissingWeightsError as err:
        return f"weights incomplete: {str(err).splitlines()[0]}"
    return None


def transformer_config(weights_dir: Path):
    """The ``gamecraft.model.TransformerConfig`` of a weights directory: the one in
    :data:`TRANSFORMER_CONFIG_FILE` (tiny directories), else production."""
    path = Path(weights_dir) / TRANSFORMER_CONFIG_FILE
    if path.is_file():
        return TransformerConfig.from_reference(json.loads(path.read_text()))
    return TransformerConfig.production()
