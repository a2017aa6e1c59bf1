"""One way to build the engine: :func:`build_service` turns a :class:`ServingConfig` into a warmed-up engine.

The predictor, the CLI, the local server and the benchmarks all call it, so they all run the same kernels,
compilation, caches and memory placement for the same weights. It runs in three steps:

1. :func:`plan_service` — pure decisions from the configuration and the GPUs found: which weights (a
   directory, tiny or random; the tiny fallback and its reason), the size of the videos, how many GPUs,
   the attention kernels and compilation (:mod:`gamecraft.serving.hardware`), the :class:`EngineConfig`,
   the pass shapes to warm up;
2. :func:`prepare_weights` — download missing weights, write tiny ones, point the compiler cache at the
   weights volume;
3. :func:`load_engine` and the warm-up (:meth:`gamecraft.engine.Engine.warm_up` on every pass shape of the
   configured presets; if compilation fails there, the engine falls back to eager and warms up again).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from gamecraft.engine import Engine, EngineConfig, GameCraftEngine, PassShape, WarmUp
from gamecraft.model import TransformerConfig
from gamecraft.model.attention import fa3_available
from gamecraft.model.sage import sage_unavailable_reason
from gamecraft.parallel import check_world_size, load_parallel_engine, start_parallel_engine
from gamecraft.pipeline.presets import PRESETS, Preset
from gamecraft.testing.random_weights import random_engine, random_worker_spec
from gamecraft.testing.tiny_weights import write_tiny_weights
from gamecraft.weights import MissingWeightsError, check_layout, download_weights, smoke_run_reason, transformer_config

from .budget import PassCosts, costs_from_warm_up, warm_up_shapes
from .config import ServingConfig
from .events import Event
from .generate import GenerationRequest, OutputNames, generate
from .hardware import (
    AttentionChoice,
    CompileSettings,
    DeviceInfo,
    check_device,
    check_request,
    choose_attention,
    compile_settings,
    go_fast_message,
    multi_gpu_estimate,
    override_device,
    plan_for,
    probe_devices,
    probe_host_memory,
    summary_line,
)
from .memory_plan import MemoryPlan

log = logging.getLogger(__name__)

TINY_DIR = Path(tempfile.gettempdir()) / "gamecraft-tiny-weights"


class ConfigError(ValueError):
    """A configuration value that cannot be used here; ``option`` names the :class:`ServingConfig` field
    so each entry point can name its own knob (``GAMECRAFT_GPUS=3: …``, ``--gpus 3: …``)."""

    def __init__(self, option: str, value, message: str):
        super().__init__(message)
        self.option, self.value = option, value


@dataclass(frozen=True)
class ServicePlan:
    """What :func:`build_service` will build (see the module docstring). ``source``: ``"weights"``,
    ``"tiny"`` or ``"random"``; ``smoke_reason``: why tiny weights replace the real ones (None when they
    were asked for or not used); ``gpu``: the GPU(s) planned for (None: the CPU); ``memory``: their memory
    plan; ``engine_config``: the engine's configuration (``weights_dir`` is the tiny directory for tiny weights;
    for random weights it is unused); ``go_fast_note``: why go_fast requests run exact here (None: they
    do not)."""

    source: str
    weights_dir: Path | None
    smoke_reason: str | None
    size: tuple[int, int]
    world_size: int
    devices: tuple[str, ...]
    gpu: DeviceInfo | None
    attention: AttentionChoice
    compile: CompileSettings
    memory: MemoryPlan | None
    engine_config: EngineConfig
    warm_shapes: tuple[PassShape, ...]
    go_fast_note: str | None
    summary: str
    go_fast_attention_note: str | None = None  # go_fast runs fp8 linears but exact attention here: why

    @property
    def device_name(self) -> str:
        return self.gpu.name if self.gpu is not None else "this CPU"

    def check_request(self, preset: Preset) -> None:
        """``ValueError`` (one line) for a request this GPU's memory plan refuses, before any GPU work."""
        if self.memory is not None:
            check_request(self.memory, 2 if preset.uses_cfg else 1, preset.go_fast)


@dataclass
class Service:
    """A built, warmed-up engine with its plan and the cost table its warm-up measured."""

    engine: Engine
    plan: ServicePlan
    costs: PassCosts
    warm_up: WarmUp | None
    setup_seconds: float

    def generate(
        self,
        request: GenerationRequest,
        out_dir: Path,
        names: OutputNames | None = None,
        stop: threading.Event | None = None,
        overlap_writes: bool = True,
    ) -> Iterator[Event]:
        """:func:`gamecraft.serving.generate.generate` on this engine, with its cost table: every entry point
        runs a request the same way."""
        return generate(self.engine, request, out_dir, names, self.costs, overlap_writes, stop=stop)

    def close(self) -> None:
        self.engine.close()


PROBE = object()  # plan_service's default: look at the GPUs of this machine


def plan_service(config: ServingConfig, device: DeviceInfo | None | object = PROBE) -> ServicePlan:
    """Decide everything :func:`build_service` does, without loading or writing anything.

    ``device``: the GPU(s) (default: :func:`probe_devices`; None = no GPU). ``ConfigError`` /
    ``RuntimeError`` with one line for what cannot run here."""
    if device is PROBE:
        device = probe_devices()
        if device is not None and config.gpu_override:
            device = override_device(device, config.gpu_override)
    source, weights_dir, reason = _weights_source(config, device is not None)
    on_gpu = device is not None and (source != "tiny" or reason is None)  # a tiny fallback runs on the CPU
    world = _world_size(config, device, on_gpu, source)
    heads = (transformer_config(weights_dir) if source == "weights" else _tiny_or_production(source)).num_heads
    try:
        check_world_size(world, heads)
    except ValueError as err:
        raise ConfigError("gpus", world, str(err)) from None
    gpu = replace(device, count=world) if on_gpu else None
    try:
        check_device(gpu)
        attention = choose_attention(
            gpu,
            config.attention,
            fa3_installed=gpu is not None and fa3_available(),
            sage_installed=_sage_installed(gpu),
        )
    except ValueError as err:
        raise RuntimeError(str(err)) from None
    compile_ = compile_settings(gpu, config.compile)
    memory = plan_for(gpu, host_memory_bytes=probe_host_memory()) if gpu is not None else None
    variants = tuple(dict.fromkeys(PRESETS[name].variant for name in config.preload))
    if gpu is not None:
        engine = EngineConfig(
            weights_dir or Path("."),
            device="cuda",
            preload=variants,
            cache_dir=config.safetensors_cache if source == "weights" else None,
            text_offload=memory.text_offload,
            one_transformer_on_gpu=not (memory.keep_both or config.keep_both),
            compile=compile_.blocks,
            compile_vae=compile_.vae_decoder,
            vae_compile_scope=config.vae_compile,
            attention_backend=attention.exact,
            go_fast_attention_backend=attention.go_fast,
            fp8_twin="replace" if memory.fp8_twin == "replace" else "beside",
            park_on_host=memory.park_on_host,
            rows_at_once=1 if memory.rows_one_at_a_time else 2,
        )
        fast_ok = memory.fp8_twin in ("beside", "replace")
    else:
        engine = EngineConfig.for_cpu(weights_dir, preload=variants, go_fast_attention_backend=attention.go_fast)
        fast_ok = True
    note = go_fast_message(gpu)
    if note is None and gpu is not None and attention.go_fast != "sage":
        reason = sage_unavailable_reason("cuda") if gpu.capability[0] == 9 else "it runs on Hopper (sm90) only"
        attention_note = f"go_fast: fp8 linears with {attention.go_fast} attention (no quantized attention: {reason})"
    else:
        attention_note = None
    presets = [PRESETS[name] for name in (config.warm_presets or tuple(PRESETS))]
    # the CPU's fp8 twin is for tests only: smoke runs do not build it in setup
    shapes = warm_up_shapes(
        presets,
        go_fast=config.warm_go_fast and fast_ok and note is None and gpu is not None,
        rows_at_once=engine.rows_at_once,
    )
    size = config.tiny_size if source == "tiny" else config.size
    device_names = tuple(f"cuda:{i}" for i in range(world)) if on_gpu else ("cpu",) * world
    estimate = multi_gpu_estimate(gpu, rows=1, attention=attention.exact) if gpu is not None else None
    summary = summary_line(gpu, attention, memory, compile_, estimate.line() if estimate else "")
    return ServicePlan(
        source,
        weights_dir,
        reason,
        size,
        world,
        device_names,
        gpu,
        attention,
        compile_,
        memory,
        engine,
        tuple(shapes),
        note,
        summary,
        attention_note,
    )


def _sage_installed(gpu: DeviceInfo | None) -> bool:
    """Whether the SageAttention kernel loads here (only asked on Hopper)."""
    return gpu is not None and gpu.capability[0] == 9 and sage_unavailable_reason("cuda") is None


def _weights_source(config: ServingConfig, cuda: bool) -> tuple[str, Path | None, str | None]:
    """(source, weights directory, reason for the tiny fallback)."""
    if config.weights == "random":
        if not cuda:
            raise RuntimeError("GAMECRAFT_WEIGHTS=random builds full-size models on a GPU; no CUDA GPU found")
        return "random", None, None
    tiny_dir = config.tiny_dir or TINY_DIR
    if config.weights == "tiny":
        return "tiny", tiny_dir, None
    weights_dir = Path(config.weights)
    if config.fallback_to_tiny:
        variant = PRESETS[config.preload[0]].variant
        reason = smoke_run_reason(weights_dir, variant, cuda)
        if reason is not None:
            return "tiny", tiny_dir, reason
    return "weights", weights_dir, None


def _world_size(config: ServingConfig, device: DeviceInfo | None, on_gpu: bool, source: str) -> int:
    visible = device.count if device is not None else 0
    world = config.gpus if config.gpus is not None else (visible if on_gpu else 1)
    if world > 1 and on_gpu and world > visible:
        raise ConfigError("gpus", world, f"only {visible} GPUs are visible")
    if world > 1 and not on_gpu and source != "tiny":
        raise ConfigError("gpus", world, "more than one GPU without GPUs is only for tests with tiny weights")
    return max(world, 1)


def prepare_weights(config: ServingConfig, plan: ServicePlan) -> None:
    """Make the plan's weights exist: download what is missing (when allowed), write tiny weights; and keep
    compiled kernels beside the safetensors cache so a restart with the same volume skips most of the
    compilation."""
    if plan.source == "tiny":
        if not (plan.weights_dir / "gamecraft_models").is_dir():
            write_tiny_weights(plan.weights_dir)
        return
    if plan.source != "weights":
        return
    try:
        for variant in plan.engine_config.preload:
            check_layout(plan.weights_dir, variant)
    except MissingWeightsError as err:
        first_line = str(err).splitlines()[0]
        if not config.download:
            raise RuntimeError(f"{first_line}; downloading is disabled (GAMECRAFT_DOWNLOAD=0)") from None
        try:
            download_weights(plan.weights_dir, plan.engine_config.preload, token=config.hf_token)
        except Exception as download_err:  # noqa: BLE001 - one clear line for SETUP_FAILED
            raise RuntimeError(
                f"{first_line}, and downloading them failed: "
                f"{type(download_err).__name__}: {str(download_err).splitlines()[0]}"
            ) from None
    # torch reads its compiler-cache location from the environment, before it first compiles; a value the
    # operator set wins.
    if config.compile_cache and plan.engine_config.compile and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        inductor = Path(plan.engine_config.cache_dir or plan.weights_dir).resolve() / "inductor"
        try:
            inductor.mkdir(parents=True, exist_ok=True)
            if os.access(inductor, os.W_OK):
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(inductor)
        except OSError:  # read-only weights: torch's default (temporary) cache is used
            pass


def load_engine(plan: ServicePlan) -> Engine:
    """Load the plan's engine: one device, or rank 0 plus ``world_size - 1`` worker processes."""
    if plan.source == "random":
        log.warning("FULL-SIZE RANDOM WEIGHTS: real speed and memory, outputs are noise")
        speed = random_engine_kwargs(plan)
        engine = random_engine(device="cuda", **speed)
        if plan.world_size <= 1:
            return engine
        return start_parallel_engine(engine, random_worker_spec(**speed), plan.world_size, list(plan.devices))
    if plan.source == "tiny":
        log.warning("TINY RANDOM WEIGHTS: outputs are pipeline smoke runs, not GameCraft videos")
    if plan.world_size > 1:
        log.info("starting %d GPU workers", plan.world_size - 1)
        return load_parallel_engine(plan.engine_config, plan.world_size, list(plan.devices))
    return GameCraftEngine.load(plan.engine_config)


def random_engine_kwargs(plan: ServicePlan) -> dict:
    """The plan's kernels and compilation as ``gamecraft.testing.random_weights.random_engine`` arguments (one
    random transformer serves both variants, so nothing is swapped)."""
    config = plan.engine_config
    return dict(
        attention_backend=config.attention_backend,
        go_fast_attention_backend=config.go_fast_attention_backend,
        compile=config.compile,
        compile_vae=config.compile_vae,
        vae_compile_scope=config.vae_compile_scope,
        one_transformer_on_gpu=False,
        text_offload=config.text_offload,
        fp8_twin=config.fp8_twin,
        rows_at_once=config.rows_at_once,
    )


def warm_up(engine: Engine, plan: ServicePlan) -> WarmUp:
    """Compile and time every pass shape of the plan; if compiling fails (a broken compiler toolchain), run
    eagerly from then on and warm up again, so the model still serves."""
    try:
        return engine.warm_up(plan.warm_shapes, *plan.size)
    except Exception as err:  # noqa: BLE001 - a broken compiler toolchain must not take the model down
        if not engine.compiled or isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower():
            raise  # (running eagerly needs more memory, not less)
        log.exception("compiling failed during the warm-up; running eagerly")
        engine.disable_compile()
        return engine.warm_up(plan.warm_shapes, *plan.size)


def build_service(
    config: ServingConfig,
    warm: bool = True,
    device: DeviceInfo | None | object = PROBE,
    plan: ServicePlan | None = None,
) -> Service:
    """Plan (unless ``plan`` is :func:`plan_service`'s for ``config`` already), prepare, load and (``warm``)
    warm up the engine ``config`` describes."""
    start = time.perf_counter()
    plan = plan or plan_service(config, device)
    log.info(
        "service plan: %s weights%s, %dx%d; %s",
        plan.source,
        f" ({plan.smoke_reason})" if plan.smoke_reason else "",
        *plan.size,
        plan.summary,
    )
    prepare_weights(config, plan)  # missing weights are the first thing to report
    if plan.source == "weights" and plan.engine_config.device != "cuda":
        raise RuntimeError(
            "no CUDA GPU found: GameCraft needs an 80 GB GPU (H100); set GAMECRAFT_WEIGHTS=tiny for a CPU smoke run"
        )
    engine = load_engine(plan)
    try:
        warm_up_result = warm_up(engine, plan) if warm else None
    except BaseException:
        engine.close()
        raise
    costs = (
        costs_from_warm_up(warm_up_result)
        if warm_up_result is not None
        else PassCosts(first_pass_s=0.0, later_pass_s=0.0, decode_s=0.0, overhead_s=5.0)
    )
    seconds = time.perf_counter() - start
    log.info("engine ready in %.1fs", seconds)
    return Service(engine, plan, costs, warm_up_result, seconds)


def _tiny_or_production(source: str) -> TransformerConfig:
    """The transformer architecture of tiny weights (before they are written) or of random ones."""
    return TransformerConfig.tiny() if source == "tiny" else TransformerConfig.production()
