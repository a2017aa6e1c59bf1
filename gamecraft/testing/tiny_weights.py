"""A complete tiny random-weight directory in the official layout and container formats.

Everything downstream (pipeline tests, the Cog server tests, the CPU demo) loads such a directory
through the production loaders, so it mirrors the real files:

* transformer ``.pt`` containers ``{"module": state_dict}`` (full and distilled; ``gamecraft.model``);
* VAE ``pytorch_model.pt`` with ``vae.``-prefixed keys + ``config.json`` with the official key names;
* a LLaVA folder in the checkpoint layout transformers 4.40 wrote for the real one
  (``language_model.model.*``, ``language_model.lm_head.*``, ``vision_tower.vision_model.*``,
  ``multi_modal_projector.*``), with a Llama-3-style tokenizer built offline: the Llama-3
  pre-tokenizer regex + byte-level mapping + a word-level vocabulary of the template and a few
  prompts, so the template prefix is one token per pre-token, like the real vocabulary (95 tokens);
* a full CLIP folder (text + vision, ``text_model.*`` / ``vision_model.*``) with a small BPE
  ``vocab.json`` / ``merges.txt`` in CLIP's format.

Random values come from ``torch.Generator`` seeded per component (never the global RNG): matrices
``N(0, 1/fan_in)``, biases ``0.1·N(0, 1)``, other 1-D parameters ``1 + 0.1·N(0, 1)``. Modules are
built on the meta device only to read parameter names and shapes.
``gamecraft_models/transformer_config.json`` (not an official file) records the tiny transformer's
architecture so loaders pick it instead of the production one (``gamecraft.weights.transformer_config``).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from gamecraft.model.text import PROMPT_SUFFIX, PROMPT_TEMPLATE
from gamecraft.model.vae_config import VaeConfig, build_model
from gamecraft.weights import DEFAULT_LAYOUT, TRANSFORMER_CONFIG_FILE, WeightsLayout

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLM_SPECIAL_TOKENS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<pad>",
    "<image>",
    "<unk>",
)
CLIP_PATTERN = r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
CLIP_SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
# Words the tiny vocabularies know besides the template (others become <unk> / character BPE pieces).
CORPUS = (
    "A charming medieval village with cobblestone streets, thatched-roof houses, and vibrant flower "
    "gardens under a bright blue sky. Realistic, High-quality. A castle on a hill, a forest road at "
    "night, a city street in the rain; the camera moves forward."
)
TINY_VAE = VaeConfig(
    block_out_channels=(8, 16, 16, 16),
    layers_per_block=2,
    latent_channels=16,
    norm_num_groups=4,
    sample_size=128,
    sample_tsize=64,
    scaling_factor=0.476986,
    mid_block_causal_attn=True,
)


def random_tensors(shapes: dict[str, tuple[int, ...]], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """float32 tensors for ``shapes`` (sorted by name, so the result only depends on the seed)."""
    out = {}
    for name in sorted(shapes):
        shape = tuple(shapes[name])
        noise = torch.randn(shape, generator=generator)
        if len(shape) >= 2:
            out[name] = noise / math.sqrt(math.prod(shape[1:]))
        elif name.endswith("bias"):
            out[name] = 0.1 * noise
        else:
            out[name] = 1 + 0.1 * noise
    return out


def meta_shapes(module_factory) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of the floating-point tensors in the state dict of ``module_factory()`` (a
    transformers/torch module), built on the meta device: no weights are allocated."""
    from accelerate import init_empty_weights

    # Parameter shapes only: meta parameters take no memory; fork_rng undoes the global-RNG draws some
    # constructors make before their tensors reach the meta device (e.g. torch.randn embeddings).
    with torch.random.fork_rng(devices=[]), init_empty_weights():
        module = module_factory()
    return {k: tuple(v.shape) for k, v in module.state_dict().items() if v.is_floating_point()}


def prefixed(shapes: dict[str, tuple[int, ...]], drop: str, add: str) -> dict[str, tuple[int, ...]]:
    """``shapes`` with the prefix ``drop`` removed from each name (where present) and ``add`` put in front."""
    # transformers 5 dropped some inner module names (e.g. CLIPTextModel.text_model); normalize to the
    # on-disk names of the official checkpoints, whatever the installed version calls them.
    return {add + (k[len(drop) :] if k.startswith(drop) else k): v for k, v in shapes.items()}


def _save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt"})
    path.chmod(0o644)  # safetensors creates 0600 files; the directory is meant to be shared like the real one


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


# -- tokenizers --------------------------------------------------------------------------------
def _split_specials(text: str, specials: tuple[str, ...]) -> list[str]:
    pattern = "|".join(re.escape(s) for s in specials)
    return [part for part in re.split(f"({pattern})", text) if part and part not in specials]


def build_llm_tokenizer() -> Tokenizer:
    """Llama-3-style tokenizer: Llama-3 regex + byte-level pre-tokenizer, word-level vocabulary, BOS added."""
    pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    vocab = {token: i for i, token in enumerate(LLM_SPECIAL_TOKENS)}
    corpus = PROMPT_TEMPLATE.format(CORPUS) + PROMPT_SUFFIX
    for part in _split_specials(corpus, LLM_SPECIAL_TOKENS):
        for piece, _ in pre_tokenizer.pre_tokenize_str(part):
            vocab.setdefault(piece, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in LLM_SPECIAL_TOKENS])
    bos = LLM_SPECIAL_TOKENS[0]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1", special_tokens=[(bos, vocab[bos])]
    )
    return tokenizer


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte → printable character table used by byte-level BPE vocabularies."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    # Printable bytes map to themselves; the rest to 256, 257, ... (vocabularies list them in this order).
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(others)}}


def build_clip_vocab() -> tuple[dict[str, int], list[str]]:
    """CLIP-format ``vocab.json`` dict and merges: all bytes, bytes + ``</w>``, one merge chain per
    corpus word (so most corpus words are one token), then the two special tokens."""
    byte_chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(byte_chars)}
    vocab.update({c + "</w>": len(byte_chars) + i for i, c in enumerate(byte_chars)})
    merges: list[str] = []
    corpus = " ".join(_split_specials(PROMPT_TEMPLATE.format(CORPUS) + PROMPT_SUFFIX, LLM_SPECIAL_TOKENS)).lower()
    table = bytes_to_unicode()
    # CLIP's word regex (Unicode classes: the tokenizers library's regex engine, not Python's re).
    words = pre_tokenizers.Split(Regex(CLIP_PATTERN), behavior="removed", invert=True).pre_tokenize_str(corpus)
    for word, _ in words:
        symbols = [table[b] for b in word.encode("utf-8")]
        symbols[-1] += "</w>"
        merged = symbols[0]
        for symbol in symbols[1:]:
            merge = f"{merged} {symbol}"
            merged += symbol
            if merge not in merges:
                merges.append(merge)
                vocab.setdefault(merged, len(vocab))
    for special in CLIP_SPECIAL_TOKENS:
        vocab[special] = len(vocab)
    return vocab, merges


# -- components --------------------------------------------------------------------------------
def write_llava(folder: Path, hidden_size: int, generator: torch.Generator) -> None:
    """Tiny LLaVA-Llama-3 folder (config, tokenizer, ``model.safetensors``) with ``hidden_size`` states."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaModel

    tokenizer = build_llm_tokenizer()
    ids = {t: tokenizer.token_to_id(t) for t in LLM_SPECIAL_TOKENS}
    text_config = dict(
        model_type="llama",
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden_size // 4,
        hidden_act="silu",
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        rope_scaling=None,
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=False,
        bos_token_id=ids["<|begin_of_text|>"],
        eos_token_id=ids["<|end_of_text|>"],
        pad_token_id=ids["<pad>"],
        architectures=["LlamaForCausalLM"],
    )
    vision_config = dict(
        model_type="clip_vision_model",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
        projection_dim=32,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    _write_json(
        folder / "config.json",
        dict(
            architectures=["LlavaForConditionalGeneration"],
            model_type="llava",
            image_token_index=ids["<image>"],
            pad_token_id=ids["<pad>"],
            projector_hidden_act="gelu",
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
            torch_dtype="float32",
            text_config=text_config,
            vision_config=vision_config,
        ),
    )
    llama = meta_shapes(lambda: LlamaModel(LlamaConfig(**text_config)))
    vision = meta_shapes(lambda: CLIPVisionModel(CLIPVisionConfig(**vision_config)))
    shapes = {
        **prefixed(llama, "", "language_model.model."),
        "language_model.lm_head.weight": (text_config["vocab_size"], hidden_size),
        **prefixed(vision, "vision_model.", "vision_tower.vision_model."),
        "multi_modal_projector.linear_1.weight": (hidden_size, vision_config["hidden_size"]),
        "multi_modal_projector.linear_1.bias": (hidden_size,),
        "multi_modal_projector.linear_2.weight": (hidden_size, hidden_size),
        "multi_modal_projector.linear_2.bias": (hidden_size,),
    }
    _save_safetensors(random_tensors(shapes, generator), folder / "model.safetensors")
    tokenizer.save(str(folder / "tokenizer.json"))
    special = {
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|end_of_text|>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
    }
    _write_json(folder / "special_tokens_map.json", special)
    _write_json(
        folder / "tokenizer_config.json",
        {
            **special,
            "tokenizer_class": "PreTrainedTokenizerFast",
            "clean_up_tokenization_spaces": False,
            "model_max_length": 8192,
            "added_tokens_decoder": {
                str(i): {
                    "content": t,
                    "lstrip": False,
                    "normalized": False,
                    "rstrip": False,
                    "single_word": False,
                    "special": True,
                }
                for t, i in ids.items()
            },
        },
    )


def write_clip(folder: Path, hidden_size: int, generator: torch.Generator) -> None:
    """Tiny full CLIP folder (``clip`` config, BPE tokenizer files, text + vision ``model.safetensors``)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModel

    vocab, merges = build_clip_vocab()
    bos, eos = vocab[CLIP_SPECIAL_TOKENS[0]], vocab[CLIP_SPECIAL_TOKENS[1]]
    text_config = dict(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        projection_dim=hidden_size,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    vision_config = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
        projection_dim=hidden_size,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    _write_json(
        folder / "config.json",
        dict(
            architectures=["CLIPModel"],
            model_type="clip",
            projection_dim=hidden_size,
            logit_scale_init_value=2.6592,
            torch_dtype="float32",
            text_config=text_config,
            vision_config=vision_config,
        ),
    )
    text = meta_shapes(lambda: CLIPTextModel(CLIPTextConfig(**text_config)))
    vision = meta_shapes(lambda: CLIPVisionModel(CLIPVisionConfig(**vision_config)))
    shapes = {
        **prefixed(text, "text_model.", "text_model."),
        **prefixed(vision, "vision_model.", "vision_model."),
        "text_projection.weight": (hidden_size, hidden_size),
        "visual_projection.weight": (hidden_size, vision_config["hidden_size"]),
        "logit_scale": (),
    }
    tensors = random_tensors(shapes, generator)
    tensors["logit_scale"] = torch.tensor(2.6592)
    _save_safetensors(tensors, folder / "model.safetensors")
    _write_json(folder / "vocab.json", vocab)
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    special = {
        "bos_token": CLIP_SPECIAL_TOKENS[0],
        "eos_token": CLIP_SPECIAL_TOKENS[1],
        "pad_token": CLIP_SPECIAL_TOKENS[1],
        "unk_token": CLIP_SPECIAL_TOKENS[1],
    }
    _write_json(folder / "special_tokens_map.json", special)
    _write_json(
        folder / "tokenizer_config.json",
        {**special, "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "clean_up_tokenization_spaces": False},
    )


def write_vae(weights_path: Path, config_path: Path, config: VaeConfig, generator: torch.Generator) -> None:
    """Official-format VAE: ``torch.save({"vae.<key>": tensor})`` and the official ``config.json``."""
    shapes = meta_shapes(lambda: build_model(config))
    tensors = {f"vae.{k}": v for k, v in random_tensors(shapes, generator).items()}
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tensors, weights_path)
    _write_json(config_path, config.to_official())


def write_tiny_weights(weights_dir: Path, seed: int = 0, layout: WeightsLayout = DEFAULT_LAYOUT) -> Path:
    """Write every component of both variants under ``weights_dir`` (a few MB); returns ``weights_dir``."""
    from gamecraft.model import TransformerConfig, random_state_dict
    from gamecraft.weights import save_official_checkpoint

    weights_dir = Path(weights_dir)
    transformer = TransformerConfig.tiny()
    for offset, variant in enumerate(("full", "distilled")):
        save_official_checkpoint(
            random_state_dict(transformer, seed=seed + offset), weights_dir / layout.transformer(variant)
        )
    write_vae(
        weights_dir / layout.vae_weights,
        weights_dir / layout.vae_config,
        TINY_VAE,
        torch.Generator().manual_seed(seed + 10),
    )
    write_llava(weights_dir / layout.llava_dir, transformer.text_states_dim, torch.Generator().manual_seed(seed + 20))
    write_clip(weights_dir / layout.clip_dir, transformer.text_states_dim_2, torch.Generator().manual_seed(seed + 30))
    _write_json(weights_dir / TRANSFORMER_CONFIG_FILE, transformer.to_dict())
    return weights_dir
