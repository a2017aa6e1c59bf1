"""Rank 0's multi-GPU engine: the single-GPU engine's interface, with passes and VAE tiles split.

:class:`ParallelEngine` wraps a :class:`gamecraft.engine.GameCraftEngine` (text encoders, VAE and
transformers on GPU 0) and a :class:`ParallelRuntime`. ``transformer(variant, fast)`` returns a
:class:`DistributedTransformer`, which the sampler calls exactly like the model: each call becomes one
``forward`` command (inputs broadcast from rank 0, the pass split by guidance row and image tokens,
every row gathered back). The VAE's tiled decode is spread over the ranks the same way. Everything
else (prompt encoding, sessions, outputs) stays on rank 0, so only rank 0 writes files.
"""

from __future__ import annotations

from typing import Sequence

import torch

from gamecraft.model.attention import text_lengths_from_mask
from gamecraft.model.rope import rope_tables
from gamecraft.model.transformer import StepCache

from .passes import PassRunner, dtype_name
from .runtime import ParallelRuntime

DEFAULT_HEAD_CHUNKS = 1  # overlap groups: none by default (2 GPUs: 1 and 2 tie, 3–4 slower; BENCHMARKS.md)


def _meta(tensor: torch.Tensor) -> tuple[tuple[int, ...], str]:
    return tuple(tensor.shape), dtype_name(tensor.dtype)


class DistributedTransformer:
    """Callable like ``GameCraftTransformer``; the pass runs on every rank of ``runtime``."""

    def __init__(self, engine: "ParallelEngine", variant: str, fast: bool):
        self._engine = engine
        self.variant = variant
        self.fast = fast
        self.model = engine.local.transformer(variant, fast=fast)  # rank 0's copy

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def config(self):
        return self.model.config

    def camera_tokens(self, cam_latents: torch.Tensor, latent_frames: int) -> torch.Tensor:
        return self.model.camera_tokens(cam_latents, latent_frames)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, text_states: torch.Tensor, text_mask: torch.Tensor,
                 text_states_2: torch.Tensor, *, cam_latents: torch.Tensor | None = None,
                 camera_tokens: torch.Tensor | None = None, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                 text_lengths: Sequence[int] | None = None, cache: StepCache | None = None, use_cache: bool = False,
                 attention_backend: str = "sdpa") -> torch.Tensor:
        """As ``GameCraftTransformer.forward``; camera tokens, RoPE tables and text lengths are made
        here on rank 0 when not given (samplers pass them, computed once per chunk)."""
        if camera_tokens is None:
            if cam_latents is None:
                raise ValueError("pass cam_latents or camera_tokens")
            camera_tokens = self.camera_tokens(cam_latents, x.shape[2])
        if rope is None:
            rope = rope_tables(*x.shape[2:], self.config, device=x.device)
        if text_lengths is None:
            text_lengths = text_lengths_from_mask(text_mask)
        return self._engine.forward(self, dict(
            x=x, t=t.float(), text_states=text_states, text_mask=text_mask, text_states_2=text_states_2),
            camera_tokens, rope, list(text_lengths), cache, use_cache, attention_backend)


class ParallelEngine:
    """The :class:`gamecraft.pipeline.session.Engine` interface over several GPUs (see the module docstring)."""

    def __init__(self, local, runtime: ParallelRuntime, head_chunks: int = DEFAULT_HEAD_CHUNKS):
        self.local = local
        self.runtime = runtime
        if head_chunks < 1:  # checked here: on a worker rank the error would end the rank
            raise ValueError(f"head_chunks must be at least 1, got {head_chunks}")
        self.head_chunks = head_chunks  # per-rank head groups whose exchanges overlap attention
        self.pack_in_graph = True  # exchange buffers packed in the compiled blocks (False: eagerly, to compare)
        runtime.attach(local)
        self._sent_camera: torch.Tensor | None = None
        self._sent_rope: tuple[torch.Tensor, torch.Tensor] | None = None
        self._cache_owner: StepCache | None = None
        local.vae.tile_decoder = self._decode_tiles

    def __getattr__(self, name):  # device, vae, config, attention backends, encode_text, ...
        return getattr(self.local, name)

    @property
    def world_size(self) -> int:
        return self.runtime.world_size

    @property
    def healthy(self) -> bool:
        return self.runtime.healthy

    def transformer(self, variant: str, fast: bool = False) -> DistributedTransformer:
        return DistributedTransformer(self, variant, fast)

    def forward(self, model: DistributedTransformer, tensors: dict[str, torch.Tensor], camera_tokens: torch.Tensor,
                rope: tuple[torch.Tensor, torch.Tensor], text_lengths: list[int], cache: StepCache | None,
                use_cache: bool, backend: str) -> torch.Tensor:
        new_camera = camera_tokens is not self._sent_camera
        new_rope = self._sent_rope is None or any(a is not b for a, b in zip(rope, self._sent_rope))
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
        meta = dict(variant=model.variant, fast=model.fast, backend=backend, text_lengths=text_lengths,
                    use_cache=use_cache, cache=cache_op, new_camera=new_camera, new_rope=new_rope,
                    head_chunks=self.head_chunks, pack_in_graph=self.pack_in_graph,
                    shapes={name: _meta(value) for name, value in tensors.items()})
        tensors = {name: value.contiguous() for name, value in tensors.items()}
        out = self.runtime.command("forward", meta, tensors)
        # Remember what the workers hold only once the call went through.
        self._sent_camera, self._sent_rope, self._cache_owner = camera_tokens, rope, cache
        return out

    def _decode_tiles(self, tiles: list[torch.Tensor]) -> list[torch.Tensor]:
        vae = self.local.vae
        tiles = [tile.contiguous() for tile in tiles]
        meta = dict(tiles=[_meta(tile) for tile in tiles],
                    outputs=[(vae.decoded_tile_shape(tile.shape), dtype_name(vae.dtype)) for tile in tiles])
        return self.runtime.command("decode_tiles", meta, tiles)

    def close(self) -> None:
        self.local.vae.tile_decoder = None
        self.runtime.close()


def start_parallel_engine(engine, spec, world_size: int, devices: list[str], timeout_s: float = 900.0,
                          head_chunks: int = DEFAULT_HEAD_CHUNKS,
                          runtime: ParallelRuntime | None = None) -> ParallelEngine:
    """Start ``world_size - 1`` workers built by ``spec`` (a :class:`WorkerSpec`) next to ``engine`` (rank 0,
    on ``devices[0]``) and wait until they are ready; on failure the workers are stopped and the error raised.

    ``runtime``: workers already started with :meth:`ParallelRuntime.start` (``spec`` and ``devices``
    are then theirs), e.g. before rank 0 loaded ``engine``, so that both loads overlap."""
    from .layout import check_world_size

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
    parallel = None
    try:
        parallel = ParallelEngine(engine, runtime, head_chunks)
        runtime.wait_ready()
    except BaseException:
        if parallel is not None:
            parallel.close()  # also gives the VAE tiles back to rank 0 alone
        else:
            runtime.close()
        raise
    return parallel


def start_workers_early(config, world_size: int, devices: list[str], timeout_s: float = 900.0
                        ) -> ParallelRuntime | None:
    """Start the worker ranks of ``GameCraftEngine.load(config)`` before rank 0 loads it, so that every
    rank loads at once (−22 s of the workers' own time in a 4-GPU ``setup()``); pass the result to
    :func:`start_parallel_engine` after rank 0's load. Only when loading just reads (every preloaded
    transformer has a current safetensors cache): otherwise each rank would convert the same ``.pt``
    at once into the same cache file, so None is returned and the workers start after rank 0's load
    has written the caches. ``ValueError`` for a world size that cannot split the heads."""
    from gamecraft.engine import GameCraftEngine
    from gamecraft.weights import transformer_config

    from .layout import check_world_size

    if world_size <= 1 or not GameCraftEngine.loads_without_writing(config):
        return None
    heads = transformer_config(config.weights_dir).num_heads
    check_world_size(world_size, heads)
    return ParallelRuntime.start(world_size, GameCraftEngine.worker_spec_for(config), heads, devices=devices,
                                 timeout_s=timeout_s)


def load_parallel_engine(config, world_size: int, devices: list[str], timeout_s: float = 900.0) -> ParallelEngine:
    """``GameCraftEngine.load(config)`` on rank 0 with ``world_size - 1`` worker ranks: the workers start
    before rank 0's load when :func:`start_workers_early` allows it, else after; on any failure they
    are stopped and the error raised (``ValueError`` for a world size that cannot split the heads)."""
    from gamecraft.engine import GameCraftEngine

    workers = start_workers_early(config, world_size, devices, timeout_s)
    try:
        engine = GameCraftEngine.load(config)
        return start_parallel_engine(engine, GameCraftEngine.worker_spec_for(config), world_size, devices, timeout_s,
                                     runtime=workers)
    except BaseException:
        if workers is not None:
            workers.close()  # idempotent
        raise


__all__ = ["DistributedTransformer", "ParallelEngine", "PassRunner", "load_parallel_engine", "start_parallel_engine",
           "start_workers_early"]
