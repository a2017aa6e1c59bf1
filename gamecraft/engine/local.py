"""The loaded models on one device (a GPU, or the CPU for tiny smoke runs), from a weights directory.

Everything is configured by :class:`EngineConfig` (no environment variables). The transformer of each
variant (``distilled``/``full``) is loaded on first use; ``preload`` names the ones loaded at start.
Text encoders can stay in pinned host memory between encodes (``text_offload``) to leave the GPU to
the transformer: a prompt is encoded once per prediction. With ``one_transformer_on_gpu`` (the 80 GB
default) only the transformer in use is on the GPU; the other variant's weights wait in pinned host
memory and are swapped in when a request asks for its preset.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from gamecraft.model import GameCraftTransformer, TransformerConfig, text_lengths_from_mask
from gamecraft.weights import load_transformer
from gamecraft.model.compile import compile_blocks, uncompile_blocks
from gamecraft.model.fp8 import fp8_copy
from gamecraft.weights.transformer import cache_is_current
from gamecraft.weights.offload import PinnedOffload
from gamecraft.pipeline.sampling import TextConditioning

from .base import Engine
from gamecraft.model.text import TextEncoders
from gamecraft.weights.text import load_text_encoders
from gamecraft.model.vae import GameCraftVae
from gamecraft.weights.vae import load_vae
from gamecraft.weights import DEFAULT_LAYOUT, WeightsLayout, check_layout, transformer_config

log = logging.getLogger(__name__)

_PIN_POOL = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gamecraft-pin")

@dataclass(frozen=True)
class EngineConfig:
    """How to load and run the models.

    ``dtype`` is the transformer's (bf16 in production, fp32 for CPU parity); ``vae_dtype`` and
    ``text_dtype`` default to the reference's fp16 on CUDA. ``cache_dir`` holds the safetensors copies
    of the transformer checkpoints (later loads mmap them). ``compile`` compiles the transformer
    blocks (``gamecraft.model.compile``); the first pass of each shape then takes longer.
    ``compile_vae`` compiles the VAE decoder for full-size tiles (the first decode then takes ≈ 20 s longer).
    """

    weights_dir: Path
    device: str = "cuda"
    dtype: torch.dtype = torch.bfloat16
    vae_dtype: torch.dtype = torch.float16
    text_dtype: torch.dtype = torch.float16
    preload: tuple[str, ...] = ("distilled",)
    text_offload: bool = True
    one_transformer_on_gpu: bool = True
    compile: bool = False
    compile_vae: bool = False  # compile the VAE decoder for full-size tiles (GameCraftVae.compile_decoder)
    compile_backend: str = "inductor"  # torch.compile's backend ("eager"/"aot_eager" in tests)
    attention_backend: str = "sdpa"
    fast_attention_backend: str | None = None  # go_fast's attention kernel (None: attention_backend)
    cache_dir: Path | None = None
    layout: WeightsLayout = field(default_factory=lambda: DEFAULT_LAYOUT)

    @classmethod
    def for_cpu(cls, weights_dir: Path, **overrides) -> "EngineConfig":
        """float32 everywhere on the CPU (fp16/bf16 kernels are slow or missing there)."""
        base = dict(device="cpu", dtype=torch.float32, vae_dtype=torch.float32, text_dtype=torch.float32,
                    text_offload=False, one_transformer_on_gpu=False)
        return cls(Path(weights_dir), **{**base, **overrides})


class GameCraftEngine(Engine):
    """:class:`gamecraft.engine.Engine` on one device."""

    def __init__(self, config: EngineConfig, vae: GameCraftVae, text: TextEncoders | None,
                 transformer_config: TransformerConfig):
        self.config = config
        self.device = torch.device(config.device)
        self.vae = vae
        self._compile = config.compile
        if config.compile_vae:
            vae.compile_decoder(backend=config.compile_backend)
        self.text_encoders = text
        self.transformer_config = transformer_config
        self.attention_backend = config.attention_backend
        self.fast_attention_backend = config.fast_attention_backend or config.attention_backend
        self._transformers: dict[str, GameCraftTransformer] = {}
        self._parked: dict[str, PinnedOffload] = {}  # variant -> pinned host copy (one_transformer_on_gpu)
        self._fast: dict[str, GameCraftTransformer] = {}  # variant -> fp8 twin sharing its other weights
        self._text_offload: list[PinnedOffload] = []
        self._pinning: concurrent.futures.Future | None = None
        if text is not None and config.text_offload and self.device.type != "cpu":
            # Pinning 16 GB of host memory takes ≈ 20 s (H200 host, BENCHMARKS.md); it runs in the
            # background while the transformer loads, and the first prompt encoding waits for it.
            self._pinning = _PIN_POOL.submit(
                lambda: [PinnedOffload(text.llm, self.device), PinnedOffload(text.clip, self.device)])

    @classmethod
    def load(cls, config: EngineConfig) -> "GameCraftEngine":
        start = time.perf_counter()
        weights_dir = Path(config.weights_dir)
        for variant in config.preload or ("distilled",):
            check_layout(weights_dir, variant, config.layout)
        text_device = "cpu" if config.text_offload else config.device
        engine = cls(config,
                     load_vae(weights_dir, config.layout, config.device, config.vae_dtype),
                     load_text_encoders(weights_dir, config.layout, text_device, config.text_dtype),
                     transformer_config(weights_dir))
        for variant in config.preload:
            engine.transformer(variant)
        log.info("engine ready in %.1fs (%s, transformer %s)", time.perf_counter() - start, config.device,
                 config.dtype)
        return engine

    @staticmethod
    def loads_without_writing(config: EngineConfig) -> bool:
        """Whether loading ``config`` only reads: every preloaded transformer has a current safetensors
        cache. Only then may several processes load it at once (each would otherwise convert the
        ``.pt`` and write the same cache file)."""
        weights_dir = Path(config.weights_dir)
        model_config = transformer_config(weights_dir)
        return all(cache_is_current(weights_dir / config.layout.transformer(variant), model_config,
                                    cache_dir=config.cache_dir) for variant in config.preload)

    @classmethod
    def load_worker(cls, device: str, config: EngineConfig) -> "GameCraftEngine":
        """A multi-GPU worker rank's engine on ``device``: VAE and transformers, no text encoders
        (prompts are encoded on rank 0). A ``gamecraft.parallel.WorkerSpec`` factory."""
        config = replace(config, device=device)
        engine = cls(config, load_vae(Path(config.weights_dir), config.layout, device, config.vae_dtype), None,
                     transformer_config(Path(config.weights_dir)))
        for variant in config.preload:
            engine.transformer(variant)
        return engine

    @property
    def loaded_variants(self) -> tuple[str, ...]:
        """Variants whose transformer is loaded, in load order."""
        return tuple(self._transformers)

    def register_transformer(self, variant: str, model: GameCraftTransformer) -> None:
        """Use ``model`` for ``variant`` (compiling its blocks unless compilation is off)."""
        if self._compile:
            compile_blocks(model, backend=self.config.compile_backend)
        self._transformers[variant] = model

    @property
    def compiled(self) -> bool:
        return self._compile

    def disable_compile(self) -> None:
        self._compile = False
        for model in (*self._transformers.values(), *self._fast.values()):
            uncompile_blocks(model)
        self.vae.uncompile_decoder()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents)

    def _swapping(self) -> bool:
        return self.config.one_transformer_on_gpu and self.device.type == "cuda"

    def transformer(self, variant: str, fast: bool = False) -> GameCraftTransformer:
        """The transformer of ``variant`` on the device, loaded on first use; ``fast``: its fp8 twin
        (``go_fast``; made on first use from the loaded weights, +9.3 GB).

        When swapping, another variant's transformer goes back to its pinned host copy first (its fp8
        twin is dropped), so only one is ever on the GPU (25.6 GB each in bf16).
        """
        if variant not in self._transformers:
            start = time.perf_counter()
            path = Path(self.config.weights_dir) / self.config.layout.transformer(variant)
            check_layout(self.config.weights_dir, variant, self.config.layout)
            target = "cpu" if self._swapping() and self._transformers else self.device
            model = load_transformer(path, self.transformer_config, dtype=self.config.dtype, device=target,
                                     cache_dir=self.config.cache_dir)
            self.register_transformer(variant, model)
            log.info("loaded %s transformer in %.1fs", variant, time.perf_counter() - start)
        model = self._transformers[variant]
        if self._swapping() and any(p is not model for p in self._transformers.values()):
            start = time.perf_counter()
            for other, other_model in self._transformers.items():
                if other_model is not model and other_model.img_in.proj.weight.device.type != "cpu":
                    self._fast.pop(other, None)
                    self._parked_copy(other, other_model).to_host()
            if model.img_in.proj.weight.device.type == "cpu":
                self._parked_copy(variant, model).to_device()
                torch.cuda.synchronize(self.device)
                log.info("swapped the %s transformer onto the GPU in %.1fs", variant, time.perf_counter() - start)
        if fast:
            if variant not in self._fast:
                twin = fp8_copy(model)
                if self._compile:
                    compile_blocks(twin, backend=self.config.compile_backend)
                self._fast[variant] = twin
            return self._fast[variant]
        return model

    def _parked_copy(self, variant: str, model: GameCraftTransformer) -> PinnedOffload:
        """The pinned host copy of ``variant``'s weights, made once (the first park copies 25.6 GB)."""
        if variant not in self._parked:
            self._parked[variant] = PinnedOffload(model, self.device)
        return self._parked[variant]

    @torch.no_grad()
    def encode_text(self, prompt: str, negative_prompt: str, guidance: bool) -> TextConditioning:
        """Rows ``[negative_prompt, prompt]`` with guidance, else ``[prompt]``; in the transformer's dtype."""
        start = time.perf_counter()
        if self._pinning is not None:
            self._text_offload, self._pinning = self._pinning.result(), None
        with contextlib.ExitStack() as stack:
            for offload in self._text_offload:
                stack.enter_context(offload.on_device())
            emb = self.text_encoders.encode([negative_prompt, prompt] if guidance else [prompt])
        lengths = tuple(text_lengths_from_mask(emb.text_mask))
        log.info("encoded prompt (%d row(s), %s valid tokens) in %.2fs", len(lengths), lengths,
                 time.perf_counter() - start)
        return TextConditioning(emb.text_states, emb.text_mask, emb.text_states_2, lengths).to(
            self.device, self.config.dtype)
