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
from gamecraft.model.compile import compile_blocks, uncompile_blocks
from gamecraft.model.text import TextEncoders
from gamecraft.model.vae import GameCraftVae
from gamecraft.pipeline.sampling import TextConditioning
from gamecraft.weights import DEFAULT_LAYOUT, WeightsLayout, check_layout, load_transformer, transformer_config
from gamecraft.weights.offload import PinnedOffload
from gamecraft.weights.text import load_text_encoders
from gamecraft.weights.transformer import cache_is_current
from gamecraft.weights.vae import load_vae

from .base import Engine
from .twins import Fp8Twin

log = logging.getLogger(__name__)

_PIN_POOL = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gamecraft-pin")


@dataclass(frozen=True)
class EngineConfig:
    """How to load and run the models.

    ``dtype`` is the transformer's (bf16 in production, fp32 for CPU parity); ``vae_dtype`` and
    ``text_dtype`` default to the reference's fp16 on CUDA. ``cache_dir`` holds the safetensors copies
    of the transformer checkpoints (later loads mmap them). ``compile`` compiles the transformer
    blocks (``gamecraft.model.compile``); the first pass of each shape then takes longer.
    ``compile_vae`` compiles the VAE decoder for the tiles ``vae_compile_scope`` names (``full``: full-size
    tiles, the first decode then takes ≈ 20 s longer; ``all``: every tile shape, ≈ 90 s).
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
    compile_vae: bool = False  # compile the VAE decoder (GameCraftVae.compile_decoder) ...
    vae_compile_scope: str = "full"  # ... for the full-size tiles only, or "all" tile shapes
    compile_backend: str = "inductor"  # torch.compile's backend ("eager"/"aot_eager" in tests)
    fp8_twin: str = "beside"  # go_fast's fp8 weights beside the bf16 ones, or "replace" them (gamecraft.engine.twins)
    park_on_host: bool = True  # swapped-out transformers wait in pinned host memory (False: reloaded from disk)
    rows_at_once: int = 2  # guidance rows per pass: 1 runs them one after the other (half the activations)
    attention_backend: str = "sdpa"
    go_fast_attention_backend: str | None = None  # go_fast's attention kernel (None: attention_backend)
    cache_dir: Path | None = None
    layout: WeightsLayout = field(default_factory=lambda: DEFAULT_LAYOUT)

    @classmethod
    def for_cpu(cls, weights_dir: Path, **overrides) -> EngineConfig:
        """float32 everywhere on the CPU (fp16/bf16 kernels are slow or missing there)."""
        base = dict(
            device="cpu",
            dtype=torch.float32,
            vae_dtype=torch.float32,
            text_dtype=torch.float32,
            text_offload=False,
            one_transformer_on_gpu=False,
        )
        return cls(Path(weights_dir), **{**base, **overrides})


class GameCraftEngine(Engine):
    """:class:`gamecraft.engine.Engine` on one device."""

    def __init__(
        self, config: EngineConfig, vae: GameCraftVae, text: TextEncoders | None, transformer_config: TransformerConfig
    ):
        self.config = config
        self.device = torch.device(config.device)
        self.vae = vae
        self._compile = config.compile
        if config.compile_vae:
            vae.compile_decoder(scope=config.vae_compile_scope, backend=config.compile_backend)
        self.text_encoders = text
        self.transformer_config = transformer_config
        self.attention_backend = config.attention_backend
        self.go_fast_attention_backend = config.go_fast_attention_backend or config.attention_backend
        self._transformers: dict[str, GameCraftTransformer] = {}
        self._parked: dict[str, PinnedOffload] = {}  # variant -> pinned host copy (one_transformer_on_gpu)
        self._twins: dict[str, Fp8Twin] = {}  # variant -> its go_fast fp8 twin
        self._text_offload: list[PinnedOffload] = []
        self._pinning: concurrent.futures.Future | None = None
        if text is not None and config.text_offload and self.device.type != "cpu":
            # Pinning 16 GB of host memory takes ≈ 20 s (H200 host, BENCHMARKS.md); it runs in the
            # background while the transformer loads, and the first prompt encoding waits for it.
            self._pinning = _PIN_POOL.submit(
                lambda: [PinnedOffload(text.llm, self.device), PinnedOffload(text.clip, self.device)]
            )

    @classmethod
    def load(cls, config: EngineConfig) -> GameCraftEngine:
        start = time.perf_counter()
        weights_dir = Path(config.weights_dir)
        for variant in config.preload or ("distilled",):
            check_layout(weights_dir, variant, config.layout)
        text_device = "cpu" if config.text_offload else config.device
        engine = cls(
            config,
            load_vae(weights_dir, config.layout, config.device, config.vae_dtype),
            load_text_encoders(weights_dir, config.layout, text_device, config.text_dtype),
            transformer_config(weights_dir),
        )
        for variant in config.preload:
            engine.transformer(variant)
        log.info("engine ready in %.1fs (%s, transformer %s)", time.perf_counter() - start, config.device, config.dtype)
        return engine

    @staticmethod
    def loads_without_writing(config: EngineConfig) -> bool:
        """Whether loading ``config`` only reads: every preloaded transformer has a current safetensors
        cache. Only then may several processes load it at once (each would otherwise convert the
        ``.pt`` and write the same cache file)."""
        weights_dir = Path(config.weights_dir)
        model_config = transformer_config(weights_dir)
        return all(
            cache_is_current(weights_dir / config.layout.transformer(variant), model_config, cache_dir=config.cache_dir)
            for variant in config.preload
        )

    @classmethod
    def load_worker(cls, device: str, config: EngineConfig) -> GameCraftEngine:
        """A multi-GPU worker rank's engine on ``device``: VAE and transformers, no text encoders
        (prompts are encoded on rank 0). A ``gamecraft.parallel.WorkerSpec`` factory."""
        config = replace(config, device=device)
        engine = cls(
            config,
            load_vae(Path(config.weights_dir), config.layout, device, config.vae_dtype),
            None,
            transformer_config(Path(config.weights_dir)),
        )
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

    @property
    def rows_at_once(self) -> int:
        return self.config.rows_at_once

    def disable_compile(self) -> None:
        self._compile = False
        for model in (*self._transformers.values(), *(t.twin for t in self._twins.values())):
            uncompile_blocks(model)
        self.vae.uncompile_decoder()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents)

    def _swapping(self) -> bool:
        return self.config.one_transformer_on_gpu

    def transformer(self, variant: str, go_fast: bool = False) -> GameCraftTransformer:
        """The transformer of ``variant`` on the device, loaded on first use; ``go_fast``: its fp8
        twin (made on first use from the loaded weights, placed as ``config.fp8_twin`` says).

        With ``one_transformer_on_gpu`` only one variant is on the GPU (23.9 GiB each in bf16): the other
        goes back to its pinned host copy first (``park_on_host``) or is dropped and later reloaded from
        its safetensors cache (hosts with too little memory for pinned copies); its fp8 twin is dropped.
        """
        if self._swapping():
            self._make_room_for(variant)
        if variant not in self._transformers:
            start = time.perf_counter()
            path = Path(self.config.weights_dir) / self.config.layout.transformer(variant)
            check_layout(self.config.weights_dir, variant, self.config.layout)
            model = load_transformer(
                path,
                self.transformer_config,
                dtype=self.config.dtype,
                device=self.device,
                cache_dir=self.config.cache_dir,
            )
            self.register_transformer(variant, model)
            log.info("loaded %s transformer in %.1fs", variant, time.perf_counter() - start)
        model = self._transformers[variant]
        if variant in self._parked and not self._parked[variant].resident:
            start = time.perf_counter()
            self._parked[variant].to_device()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            log.info("swapped the %s transformer onto the GPU in %.1fs", variant, time.perf_counter() - start)
        if go_fast:
            if variant not in self._twins:
                prepare = (
                    (lambda twin: compile_blocks(twin, backend=self.config.compile_backend)) if self._compile else None
                )
                self._twins[variant] = Fp8Twin(model, self.device, self.config.fp8_twin, prepare)
            return self._twins[variant].use(True)
        if variant in self._twins:
            return self._twins[variant].use(False)
        return model

    def _make_room_for(self, variant: str) -> None:
        """Take every other variant's transformer off the GPU (see :meth:`transformer`)."""
        for other in [v for v in self._transformers if v != variant]:
            model = self._transformers[other]
            if model is self._transformers.get(variant) or (other in self._parked and not self._parked[other].resident):
                continue  # already parked (random engines register one model under both names)
            if other in self._twins:
                self._twins.pop(other).release()
            if not self.config.park_on_host:
                del self._transformers[other]  # reloaded from the safetensors cache on its next request
                self._parked.pop(other, None)
                log.info("dropped the %s transformer from the GPU (reloaded on its next use)", other)
                continue
            if other not in self._parked:
                self._parked[other] = PinnedOffload(model, self.device)  # the first park copies 23.9 GiB
            self._parked[other].to_host()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @torch.no_grad()
    def warm_up_text(self, rows: int) -> TextConditioning:
        """While the text encoders are still being pinned (≈ 20 s for 16 GB, the 19 s "first prompt encode"
        of issue 27), zeros of the encoders' output shapes with 16 valid tokens: the compiled graphs do not
        depend on the text's values or length (attention runs outside them), so the warm-up need not wait;
        the pinning goes on beside it and the warm-up's final encode waits for what is left."""
        if self._pinning is None or self._pinning.done() or self.text_encoders is None:
            return super().warm_up_text(rows)
        length, config = self.text_encoders.config.text_len, self.transformer_config
        mask = torch.zeros(rows, length, dtype=torch.int64, device=self.device)
        mask[:, :16] = 1
        return TextConditioning(
            torch.zeros(rows, length, config.text_states_dim, device=self.device, dtype=self.config.dtype),
            mask,
            torch.zeros(rows, config.text_states_dim_2, device=self.device, dtype=self.config.dtype),
            (16,) * rows,
        )

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
        log.info(
            "encoded prompt (%d row(s), %s valid tokens) in %.2fs", len(lengths), lengths, time.perf_counter() - start
        )
        return TextConditioning(emb.text_states, emb.text_mask, emb.text_states_2, lengths).to(
            self.device, self.config.dtype
        )
