"""Full-size models with random weights, built directly on the device (no weight files needed).

For GPU benchmarks and GPU server smoke runs where the real 80 GB of weights are not available: the
transformer (12.8 B, production architecture), the VAE (production config), LLaVA-Llama-3-8B's
language model and CLIP-L's text model have their real sizes, so time and memory are the real ones;
the outputs are noise. Tokenizers are the tiny offline ones of :mod:`gamecraft.testing.tiny_weights` (token
ids stay far below the real vocabulary size, so every lookup is valid).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from pathlib import Path

import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, LlamaConfig, LlamaModel, PreTrainedTokenizerFast

from gamecraft.engine import EngineConfig, GameCraftEngine
from gamecraft.model import GameCraftTransformer, TransformerConfig, init_random_
from gamecraft.model.text import TextEncoders
from gamecraft.model.vae import GameCraftVae
from gamecraft.model.vae_config import VaeConfig, build_model
from gamecraft.specs.workers import WorkerSpec
from gamecraft.testing.tiny_weights import TINY_VAE, write_tiny_weights
from gamecraft.weights import DEFAULT_LAYOUT

log = logging.getLogger(__name__)

# HunyuanVideo "884-16c-hy0801" VAE (golden README §4) and Llama-3-8B's language model.
PRODUCTION_VAE = VaeConfig(
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=16,
    norm_num_groups=32,
    sample_size=256,
    sample_tsize=64,
    scaling_factor=0.476986,
    mid_block_causal_attn=True,
)
LLAMA3_8B = dict(
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
    max_position_embeddings=8192,
)
CLIP_L_TEXT = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    projection_dim=768,
)


@torch.no_grad()
def _randomize_(module: torch.nn.Module, generator: torch.Generator, std: float = 0.02) -> None:
    """Normal(0, std) matrices, ones for norm weights, zeros for biases — on the module's device."""
    for name, param in module.named_parameters():
        if param.ndim >= 2:
            param.normal_(0.0, std, generator=generator)
        elif name.endswith("bias"):
            param.zero_()
        else:
            param.fill_(1.0)


def _on_device(factory, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Build on the meta device, then allocate (uninitialized) on ``device`` in ``dtype`` — no CPU copy, and no
    float32 copy on the device first (LLaMA-8B in float32 would need 28 GiB on the GPU for a moment)."""
    with torch.device("meta"):
        module = factory()
    return module.to(dtype).to_empty(device=device)


def random_text_encoders(
    device: torch.device,
    dtype: torch.dtype,
    seed: int,
    tokenizer_dir: Path,
    llm_config: dict = LLAMA3_8B,
    clip_config: dict = CLIP_L_TEXT,
) -> TextEncoders:
    """LLaVA's language model and CLIP's text model at the given sizes, random, on ``device``."""
    generator = torch.Generator(device).manual_seed(seed)
    llava_dir = tokenizer_dir / DEFAULT_LAYOUT.llava_dir
    clip_dir = tokenizer_dir / DEFAULT_LAYOUT.clip_dir
    llm = _on_device(lambda: LlamaModel(LlamaConfig(**llm_config)), device, dtype)
    _randomize_(llm, generator)
    with torch.device(device):  # inv_freq is a non-persistent buffer: to_empty left it uninitialized
        llm.rotary_emb = type(llm.rotary_emb)(llm.config)
    clip_text = json.loads((clip_dir / "config.json").read_text()).get("text_config", {})
    clip_config = CLIPTextConfig(
        **clip_config,
        eos_token_id=clip_text.get("eos_token_id", 2),
        pad_token_id=clip_text.get("pad_token_id", 1),
        bos_token_id=clip_text.get("bos_token_id", 0),
    )
    clip = _on_device(lambda: CLIPTextModel(clip_config), device, dtype)
    _randomize_(clip, generator)
    with torch.no_grad():  # position ids are a non-persistent buffer that to_empty left uninitialized
        for name, buffer in clip.named_buffers():
            if name.endswith("position_ids"):
                buffer.copy_(torch.arange(buffer.shape[-1], device=device).expand_as(buffer))
    return TextEncoders(
        llm.eval().requires_grad_(False),
        PreTrainedTokenizerFast.from_pretrained(str(llava_dir), padding_side="right"),
        clip.eval().requires_grad_(False),
        CLIPTokenizer.from_pretrained(str(clip_dir)),
    )


def random_engine(
    device: str = "cuda",
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
    variants: tuple[str, ...] = ("distilled", "full"),
    text_offload: bool = True,
    attention_backend: str = "sdpa",
    vae_dtype: torch.dtype = torch.float16,
    text_dtype: torch.dtype = torch.float16,
    transformer_config: TransformerConfig | None = None,
    vae_config: VaeConfig = PRODUCTION_VAE,
    llm_config: dict = LLAMA3_8B,
    clip_config: dict = CLIP_L_TEXT,
    compile: bool = False,
    compile_vae: bool = False,
    vae_compile_scope: str = "full",
    text: bool = True,
    go_fast_attention_backend: str | None = None,
    compile_backend: str = "inductor",
    one_transformer_on_gpu: bool = False,
    fp8_twin: str = "beside",
    rows_at_once: int = 2,
    distinct_variants: bool = False,
) -> GameCraftEngine:
    """A :class:`GameCraftEngine` with random models (one random transformer serves every variant; with
    ``distinct_variants`` each variant has its own, seeded ``seed + 100 * i``, so ``one_transformer_on_gpu``
    swaps them as it swaps the real checkpoints).

    Defaults are the production sizes; the size arguments exist so the same code runs small on a CPU.
    ``text=False`` skips the text encoders (multi-GPU worker ranks; the same ``seed`` gives every
    rank the same transformer and VAE). Also a ``gamecraft.parallel.WorkerSpec`` factory.
    """
    start = time.perf_counter()
    dev = torch.device(device)
    transformer_config = transformer_config or TransformerConfig.production()
    tokenizer_dir = write_tiny_weights(Path(tempfile.mkdtemp(prefix="gamecraft-tokenizers-")))
    config = EngineConfig(
        tokenizer_dir,
        device=device,
        dtype=dtype,
        vae_dtype=vae_dtype,
        text_dtype=text_dtype,
        preload=(),
        text_offload=text_offload,
        attention_backend=attention_backend,
        go_fast_attention_backend=go_fast_attention_backend,
        compile=compile,
        compile_vae=compile_vae,
        vae_compile_scope=vae_compile_scope,
        compile_backend=compile_backend,
        one_transformer_on_gpu=one_transformer_on_gpu,
        fp8_twin=fp8_twin,
        rows_at_once=rows_at_once,
    )
    transformers = []
    for i in range(len(variants) if distinct_variants else 1):
        transformer = GameCraftTransformer(transformer_config, dtype=dtype, device="meta")
        init_random_(transformer, seed + 100 * i, device=dev)
        transformers.append(transformer.eval().requires_grad_(False))
    vae_model = build_model(vae_config).to_empty(device=dev).to(config.vae_dtype)  # meta -> device, no CPU copy
    _randomize_(vae_model, torch.Generator(dev).manual_seed(seed + 2))
    vae_model = vae_model.eval().requires_grad_(False)
    encoders = (
        random_text_encoders(dev, config.text_dtype, seed + 1, tokenizer_dir, llm_config, clip_config) if text else None
    )
    engine = GameCraftEngine(config, GameCraftVae(vae_model, vae_config), encoders, transformer_config)
    for i, variant in enumerate(variants):
        engine.register_transformer(variant, transformers[i if distinct_variants else 0])
    log.info("random full-size engine on %s in %.1fs", device, time.perf_counter() - start)
    return engine


# The tiny transformer with the production model's 24 heads, so every GPU count the model allows (1, 2, 3, 4, 6,
# 8) can be exercised with gloo processes on a CPU.
TINY_24_HEADS = dataclasses.replace(TransformerConfig.tiny(), hidden_size=192, num_heads=24, rope_dim_list=(2, 2, 4))
TINY_LLM = dict(
    vocab_size=1000,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
)
TINY_CLIP = dict(
    vocab_size=1000,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=77,
)


def tiny_random_engine(
    device: str = "cpu", seed: int = 0, transformer_config: TransformerConfig | None = None, text: bool = True, **speed
) -> GameCraftEngine:
    """:func:`random_engine` with tiny float32 models, for CPU tests and CPU smoke runs of the
    benchmarks (also a ``gamecraft.parallel.WorkerSpec`` factory). ``speed``: random_engine's kernel and
    compilation options."""
    return random_engine(
        device=device,
        dtype=torch.float32,
        seed=seed,
        vae_dtype=torch.float32,
        text_dtype=torch.float32,
        text_offload=False,
        transformer_config=transformer_config or TransformerConfig.tiny(),
        vae_config=TINY_VAE,
        llm_config=TINY_LLM,
        clip_config=TINY_CLIP,
        text=text,
        **speed,
    )


def random_worker_spec(tiny: bool = False, **kwargs) -> WorkerSpec:
    """How a multi-GPU worker rank builds its twin of ``random_engine(**kwargs)`` (``tiny_random_engine``
    with ``tiny``): the same seed gives the same weights; no text encoders (prompts are encoded on rank 0)."""
    factory = "tiny_random_engine" if tiny else "random_engine"
    return WorkerSpec(f"gamecraft.testing.random_weights:{factory}", dict(kwargs, text=False))
