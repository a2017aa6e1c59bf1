"""Rank 0's multi-GPU engine: the single-GPU engine's interface, with passes and VAE tiles split.

:class:`ParallelEngine` wraps a :class:`gamecraft.engine.GameCraftEngine` (text encoders, VAE and
transformers on GPU 0) and a :class:`ParallelRuntime`. ``transformer(variant, go_fast)`` returns a
:class:`DistributedTransformer`, which the sampler calls exactly like the model: each call becomes one
``forward`` command (inputs broadcast from rank 0, the pass split by guidance row and image tokens,
every row gathered back). The VAE's tiled decode is spread over the ranks the same way. Everything
else (prompt encoding, sessions, outputs) stays on rank 0, so only rank 0 writes files.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from gamecraft.engine import Engine, EngineConfig, EngineFailed, GameCraftEngine
from gamecraft.model import PassInputs, StepCache
from gamecraft.model.attention import text_lengths_from_mask
from gamecraft.model.rope import rope_tables
from gamecraft.pipeline.sampling import TextConditioning
from gamecraft.specs.workers import WorkerSpec
from gamecraft.weights import transformer_config

from .commands import DecodeTiles, DisableCompile, Forward, TensorMeta, dtype_name
from .layout import check_world_size
from .runtime import ParallelRuntime, WorkerFailure

DEFAULT_HEAD_CHUNKS = 1  # overlap groups: none by default (2 GPUs: 1 and 2 tie, 3–4 slower; BENCHMARKS.md)


class DistributedTransformer:
    """Callable like ``GameCraftTransformer``; the pass runs on every rank of the runtime."""

    def __init__(self, engine: ParallelEngine, variant: str, go_fast: bool):
        self._engine = engine
        self.variant = variant
        self.go_fast = go_fast
        self.model = engine.local.transformer(variant, go_fast=go_fast)  # rank 0's copy

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def config(self):
        return self.model.config

    def camera_tokens(self, cam_latents: torch.Tensor, latent_frames: int) -> torch.Tensor:
        return self.model.camera_tokens(cam_latents, latent_frames)

    def __call__(self, inputs: PassInputs) -> torch.Tensor:
        """As ``GameCraftTransformer.forward``; camera tokens, RoPE tables and text lengths are made
        here on rank 0 when not given (samplers pass them, computed once per chunk)."""
        camera_tokens, rope, text_lengths = inputs.camera_tokens, inputs.rope, inputs.text_lengths
        if camera_tokens is None:
            if inputs.cam_latents is None:
                raise ValueError("pass cam_latents or camera_tokens")
            camera_tokens = self.camera_tokens(inputs.cam_latents, inputs.x.shape[2])
        if rope is None:
            rope = rope_tables(*inputs.x.shape[2:], self.config, device=inputs.x.device)
        if text_lengths is None:
            text_lengths = text_lengths_from_mask(inputs.text_mask)
        resolved = replace(
            inputs, t=inputs.t.float(), camera_tokens=camera_tokens, rope=rope, text_lengths=list(text_lengths)
        )
        return self._engine.forward(self, resolved)


class ParallelEngine(Engine):
    """:class:`gamecraft.engine.Engine` over several GPUs (see the module docstring): ``local`` is rank 0's
    single-GPU engine (text encoders, VAE, transformers), ``runtime`` the worker ranks.

    ``head_chunks`` (Ulysses overlap groups) and ``pack_in_graph`` (exchange buffers packed in the compiled
    blocks) are sent with every pass, so benchmarks may change them between passes."""

    def __init__(self, local: GameCraftEngine, runtime: ParallelRuntime, head_chunks: int = DEFAULT_HEAD_CHUNKS):
        self.local = local
        self.runtime = runtime
        if head_chunks < 1:  # checked here: on a worker rank the error would end the rank
            raise ValueError(f"head_chunks must be at least 1, got {head_chunks}")
        self.head_chunks = head_chunks
        self.pack_in_graph = True
        self.device = local.device
        self.transformer_config = local.transformer_config
        self.vae = local.vae
        self.attention_backend = local.attention_backend
        self.go_fast_attention_backend = local.go_fast_attention_backend
        runtime.attach(local)
        self._sent_camera: torch.Tensor | None = None
        self._sent_rope: tuple[torch.Tensor, torch.Tensor] | None = None
        self._cache_owner: StepCache | None = None

    @property
    def loaded_variants(self) -> tuple[str, ...]:
        return self.local.loaded_variants

    @property
    def world_size(self) -> int:
        return self.runtime.world_size

    @property
    def healthy(self) -> bool:
        return self._failure is None and self.runtime.healthy

    @property
    def failure(self) -> str | None:
        return self._failure or self.runtime.failure

    def failed_error(self) -> EngineFailed:
        if self._failure is None:  # the workers' runtime failed: the error its calls raise
            return WorkerFailure(f"{self.runtime.failure}; the model must be restarted")
        return super().failed_error()

    @property
    def compiled(self) -> bool:
        return self.local.compiled

    def disable_compile(self) -> None:
        self.runtime.command(DisableCompile())  # every rank, rank 0 included

    def encode_text(self, prompt: str, negative_prompt: str, guidance: bool) -> TextConditioning:
        return self.local.encode_text(prompt, negative_prompt, guidance)

    def transformer(self, variant: str, go_fast: bool = False) -> DistributedTransformer:
        return DistributedTransformer(self, variant, go_fast)

    def forward(self, model: DistributedTransformer, inputs: PassInputs) -> torch.Tensor:
        """One pass of ``model`` on every rank: ``inputs`` with camera tokens, RoPE tables and text lengths
        resolved (:class:`DistributedTransformer` does it). Camera tokens and RoPE tables are sent only when
        they are other tensors than the last pass's (the workers keep theirs), and the workers' step cache
        starts afresh when ``inputs.cache`` is another cache."""
        camera_tokens, rope, cache = inputs.camera_tokens, inputs.rope, inputs.cache
        tensors = {
            "x": inputs.x,
            "t": inputs.t,
            "text_states": inputs.text_states,
            "text_mask": inputs.text_mask,
            "text_states_2": inputs.text_states_2,
        }
        new_camera = camera_tokens is not self._sent_camera
        new_rope = self._sent_rope is None or any(a is not b for a, b in zip(rope, self._sent_rope, strict=True))
        if cache is None:
            cache_op = "none"
        elif cache is not self._cache_owner:
            cache_op = "reset"
        else:
            cache_op = "keep"
        if new_camera:
            tensors["camera_tokens"] = camera_tokens
        if new_rope:
            tensors["rope_cos"], tensors["rope_sin"] = rope
        tensors = {name: value.contiguous() for name, value in tensors.items()}
        command = Forward(
            variant=model.variant,
            go_fast=model.go_fast,
            backend=inputs.attention_backend,
            text_lengths=tuple(inputs.text_lengths),
            use_cache=inputs.use_cache,
            cache=cache_op,
            head_chunks=self.head_chunks,
            pack_in_graph=self.pack_in_graph,
            shapes={name: TensorMeta.of(value) for name, value in tensors.items()},
        )
        out = self.runtime.command(command, tensors)
        # Remember what the workers hold only once the call went through.
        self._sent_camera, self._sent_rope, self._cache_owner = camera_tokens, rope, cache
        return out

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The VAE's tiled decode with the tiles spread over every rank."""
        return self.vae.decode(latents, tile_decoder=self._decode_tiles)

    def _decode_tiles(self, tiles: list[torch.Tensor]) -> list[torch.Tensor]:
        tiles = [tile.contiguous() for tile in tiles]
        outputs = tuple(
            TensorMeta(self.vae.decoded_tile_shape(tile.shape), dtype_name(self.vae.dtype)) for tile in tiles
        )
        return self.runtime.command(DecodeTiles(tuple(TensorMeta.of(tile) for tile in tiles), outputs), tiles)

    def close(self) -> None:
        self.runtime.close()


def engine_worker_spec(config: EngineConfig) -> WorkerSpec:
    """How a worker rank builds its twin of ``GameCraftEngine.load(config)``: VAE and transformers on its
    own GPU, no text encoders (prompts are encoded on rank 0)."""
    return WorkerSpec("gamecraft.engine.local:GameCraftEngine.load_worker", dict(config=config))


def start_parallel_engine(
    engine: GameCraftEngine,
    spec: WorkerSpec,
    world_size: int,
    devices: list[str],
    timeout_s: float = 900.0,
    head_chunks: int = DEFAULT_HEAD_CHUNKS,
    runtime: ParallelRuntime | None = None,
) -> ParallelEngine:
    """Start ``world_size - 1`` workers built by ``spec`` (a :class:`WorkerSpec`) next to ``engine`` (rank 0,
    on ``devices[0]``) and wait until they are ready; on failure the workers are stopped and the error raised.

    ``runtime``: workers already started with :meth:`ParallelRuntime.start` (``spec`` and ``devices``
    are then theirs), e.g. before rank 0 loaded ``engine``, so that both loads overlap."""
    heads = engine.transformer_config.num_heads
    try:
        if runtime is not None and runtime.world_size != world_size:
            raise ValueError(f"the started runtime has {runtime.world_size} ranks, not {world_size}")
        check_world_size(world_size, heads)
    except ValueError:
        if runtime is not None:
            runtime.close()
        raise
    if runtime is None:
        runtime = ParallelRuntime.start(world_size, spec, heads, devices=devices, timeout_s=timeout_s)
    try:
        parallel = ParallelEngine(engine, runtime, head_chunks)
        runtime.wait_ready()
    except BaseException:
        runtime.close()
        raise
    return parallel


def start_workers_early(
    config: EngineConfig, world_size: int, devices: list[str], timeout_s: float = 900.0
) -> ParallelRuntime | None:
    """Start the worker ranks of ``GameCraftEngine.load(config)`` before rank 0 loads it, so that every
    rank loads at once (−22 s of the workers' own time in a 4-GPU ``setup()``); pass the result to
    :func:`start_parallel_engine` after rank 0's load. Only when loading just reads (every preloaded
    transformer has a current safetensors cache): otherwise each rank would convert the same ``.pt``
    at once into the same cache file, so None is returned and the workers start after rank 0's load
    has written the caches. ``ValueError`` for a world size that cannot split the heads."""
    if world_size <= 1 or not GameCraftEngine.loads_without_writing(config):
        return None
    heads = transformer_config(config.weights_dir).num_heads
    check_world_size(world_size, heads)
    return ParallelRuntime.start(world_size, engine_worker_spec(config), heads, devices=devices, timeout_s=timeout_s)


def load_parallel_engine(
    config: EngineConfig, world_size: int, devices: list[str], timeout_s: float = 900.0
) -> ParallelEngine:
    """``GameCraftEngine.load(config)`` on rank 0 with ``world_size - 1`` worker ranks: the workers start
    before rank 0's load when :func:`start_workers_early` allows it, else after; on any failure they
    are stopped and the error raised (``ValueError`` for a world size that cannot split the heads)."""
    workers = start_workers_early(config, world_size, devices, timeout_s)
    try:
        engine = GameCraftEngine.load(config)
        return start_parallel_engine(
            engine, engine_worker_spec(config), world_size, devices, timeout_s, runtime=workers
        )
    except BaseException:
        if workers is not None:
            workers.close()  # idempotent
        raise


__all__ = [
    "DistributedTransformer",
    "ParallelEngine",
    "engine_worker_spec",
    "load_parallel_engine",
    "start_parallel_engine",
    "start_workers_early",
]
