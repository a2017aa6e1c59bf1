"""Loading the text encoders from the official ``stdmodels`` folders: LLaVA-Llama-3-8B's language model only
(the vision tower and projector are never read) and CLIP-L's text model, with their tokenizers."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import AutoConfig, CLIPTextModel, CLIPTokenizer, LlamaModel, PreTrainedTokenizerFast

from gamecraft.model.text import TextEncoderConfig, TextEncoders

from .layout import DEFAULT_LAYOUT, WeightsLayout

logger = logging.getLogger(__name__)

# Key prefixes of the LLaVA language model's decoder in the two checkpoint layouts transformers has
# written (<= 4.51: ``language_model.model.*``; >= 4.52: ``model.language_model.*``).
_LLM_PREFIXES = ("language_model.model.", "model.language_model.")
_CLIP_TEXT_PREFIX = "text_model."


def _llava_weight_files(llava_dir: Path) -> list[Path]:
    index = llava_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [llava_dir / shard for shard in shards]
    return [llava_dir / "model.safetensors"]


def load_llm(llava_dir: Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float16) -> LlamaModel:
    """The LLaVA checkpoint's language model as a ``LlamaModel`` (no LM head, no vision tower).

    Built on the meta device from ``config.json``'s ``text_config`` and filled with the decoder's
    tensors only (strict: every parameter present, no stray decoder key).
    """
    from accelerate import init_empty_weights

    llava_dir = Path(llava_dir)
    text_config = AutoConfig.from_pretrained(llava_dir).text_config
    with init_empty_weights():  # parameters on meta; buffers (RoPE frequencies) are computed normally
        model = LlamaModel(text_config)
    return _load_decoder(model, _llava_weight_files(llava_dir), _LLM_PREFIXES, False, llava_dir, device, dtype)


def _load_decoder(
    model: torch.nn.Module,
    files: list[Path],
    prefixes: tuple[str, ...],
    keep_prefix: bool,
    folder: Path,
    device,
    dtype: torch.dtype,
) -> torch.nn.Module:
    """Fill a meta-device ``model`` with the tensors of ``files`` whose keys start with one of
    ``prefixes`` (stripped unless ``keep_prefix``); other tensors are never read. Strict."""
    state_dict = {}
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"weights not found: expected {path}")
        with safe_open(str(path), framework="pt", device="cpu") as shard:
            for key in shard.keys():  # noqa: SIM118 - safe_open is not iterable
                prefix = next((p for p in prefixes if key.startswith(p)), None)
                if prefix is not None:
                    state_dict[key if keep_prefix else key[len(prefix) :]] = shard.get_tensor(key).to(dtype)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{folder}: weights do not match its config: {len(missing)} missing "
            f"{missing[:20]}, {len(unexpected)} unexpected {unexpected[:20]}"
        )
    model.load_state_dict(state_dict, strict=True, assign=True)
    # Like the reference's ``.to(dtype)`` this also casts float buffers (Llama's RoPE frequencies).
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def load_clip(clip_dir: Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float16) -> CLIPTextModel:
    """CLIP's text model from a CLIP (or CLIP-text) checkpoint folder: only ``text_model.*`` is read (strict)."""
    from accelerate import init_empty_weights

    clip_dir = Path(clip_dir)
    config = AutoConfig.from_pretrained(clip_dir)
    with init_empty_weights():
        model = CLIPTextModel(getattr(config, "text_config", config))
    # On disk the keys are ``text_model.*``; transformers 5's CLIPTextModel names them without it.
    keep_prefix = any(k.startswith(_CLIP_TEXT_PREFIX) for k in model.state_dict())
    return _load_decoder(
        model, [clip_dir / "model.safetensors"], (_CLIP_TEXT_PREFIX,), keep_prefix, clip_dir, device, dtype
    )


def load_text_encoders(
    weights_dir: Path,
    layout: WeightsLayout | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float16,
    config: TextEncoderConfig | None = None,
) -> TextEncoders:
    """Both encoders and tokenizers from a weights directory in the official layout .

    ``dtype`` float16 is the reference's production precision, float32 the parity one.
    """
    layout = layout or DEFAULT_LAYOUT
    llava_dir, clip_dir = Path(weights_dir) / layout.llava_dir, Path(weights_dir) / layout.clip_dir
    for folder, what in ((llava_dir, "LLaVA folder"), (clip_dir, "CLIP folder")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} not found: expected {folder}")
    encoders = TextEncoders(
        load_llm(llava_dir, device, dtype),
        PreTrainedTokenizerFast.from_pretrained(str(llava_dir), padding_side="right"),
        load_clip(clip_dir, device, dtype),
        CLIPTokenizer.from_pretrained(str(clip_dir)),
        config or TextEncoderConfig(),
    )
    logger.info("loaded text encoders from %s (%s, %s, crop_start %d)", weights_dir, device, dtype, encoders.crop_start)
    return encoders
