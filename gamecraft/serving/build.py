"""One way to build the engine: :func:`build_engine` turns a :class:`ServingConfig` into a warmed-up engine.

The predictor, the CLI, the local server and the benchmarks all call it, so they all run the same kernels,
compilation, caches and memory placement for the same weights. It runs in three steps:

1. :func:`plan_engine` — pure decisions from the configuration and the GPUs found: which weights (a
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
import time
from dataclasses import dataclass
from pathlib import Path


from gamecraft.engine import Engine, EngineConfig, GameCraftEngine, PassShape, WarmUp
from gamecraft.model import TransformerConfig
from gamecraft.parallel import check_world_size, load_parallel_engine, start_parallel_engine
from gamecraft.pipeline.presets import PRESETS
from gamecraft.testing.random_weights import random_engine, random_worker_spec
from gamecraft.testing.tiny_weights import write_tiny_weights
from gamecraft.weights import (MissingWeightsError, check_layout, download_weights, smoke_run_reason,
                               transformer_config)

from .budget import PassCosts, costs_from_warm_up, warm_up_shapes
from .config import ServingConfig
from .hardware import DeviceInfo, SpeedSettings, probe_devices, speed_settings

log = logging.getLogger(__name__)

TINY_DIR = Path(tempfile.gettempdir()) / "gamecraft-tiny-weights"


class ConfigError(ValueError):
    """A configuration value that cannot be used here; ``option`` names the :class:`ServingConfig` field
    so each entry point can name its own knob (``GAMECRAFT_GPUS=3: …``, ``--gpus 3: …``)."""

    def __init__(self, option: str, value, message: str):
        super().__init__(message)
        self.option, self.value = option, value


@dataclass(frozen=True)
class EnginePlan:
    """What :func:`build_engine` will build (see the module docstring). ``source``: ``"weights"``,
    ``"tiny"`` or ``"random"``; ``smoke_reason``: why tiny weights replace the real ones (None when they
    were asked for or not used); ``engine``: the engine's configuration (``weights_dir`` is the tiny
    directory for tiny weights; for random weights it is unused)."""

    source: str
    weights_dir: Path | None
    smoke_reason: str | None
    size: tuple[int, int]
    world_size: int
    devices: tuple[str, ...]
    speed: SpeedSettings
    engine: EngineConfig
    warm_shapes: tuple[PassShape, ...]

    @property
    def device_name(self) -> str:
        return self.speed.device_name


@dataclass
class ServingEngine:
    """A built, warmed-up engine with its plan and the cost table its warm-up measured."""

    engine: Engine
    plan: EnginePlan
    costs: PassCosts
    warm_up: WarmUp | None
    setup_seconds: float

    def close(self) -> None:
        self.engine.close()


def plan_engine(config: ServingConfig, devices: list[DeviceInfo] | None = None) -> EnginePlan:
    """Decide everything :func:`build_engine` does, without loading or writing anything.

    ``devices``: the GPUs (default: :func:`probe_devices`; an empty list = no GPU). ``ConfigError`` /
    ``RuntimeError`` with one line for what cannot run here."""
    devices = probe_devices(config.gpu_override) if devices is None else devices
    cuda = bool(devices)
    source, weights_dir, reason = _weights_source(config, cuda)
    on_gpu = cuda and (source != "tiny" or reason is None)  # a tiny fallback runs on the CPU
    world = _world_size(config, devices, on_gpu, source)
    heads = (transformer_config(weights_dir) if source == "weights" else _tiny_or_production(source)).num_heads
    try:
        check_world_size(world, heads)
    except ValueError as err:
        raise ConfigError("gpus", world, str(err)) from None
    speed = speed_settings(devices[0] if on_gpu else None, config)
    variants = tuple(dict.fromkeys(PRESETS[name].variant for name in config.preload))
    if on_gpu:
        engine = EngineConfig(weights_dir or Path("."), device="cuda", preload=variants,
                              cache_dir=config.safetensors_cache if source == "weights" else None,
                              one_transformer_on_gpu=speed.one_transformer_on_gpu, compile=speed.compile,
                              compile_vae=speed.compile_vae, attention_backend=speed.attention_backend,
                              fast_attention_backend=speed.fast_attention_backend)
    else:
        engine = EngineConfig.for_cpu(weights_dir, preload=variants)
    presets = [PRESETS[name] for name in (config.warm_presets or tuple(PRESETS))]
    shapes = warm_up_shapes(presets, go_fast=config.warm_go_fast and speed.warm_go_fast)
    size = config.tiny_size if source == "tiny" else config.size
    device_names = tuple(f"cuda:{i}" for i in range(world)) if on_gpu else ("cpu",) * world
    return EnginePlan(source, weights_dir, reason, size, world, device_names, speed, engine, tuple(shapes))


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


def _world_size(config: ServingConfig, devices: list[DeviceInfo], on_gpu: bool, source: str) -> int:
    visible = len(devices)
    world = config.gpus if config.gpus is not None else (visible if on_gpu else 1)
    if world > 1 and on_gpu and world > visible:
        raise ConfigError("gpus", world, f"only {visible} GPUs are visible")
    if world > 1 and not on_gpu and source != "tiny":
        raise ConfigError("gpus", world, "more than one GPU without GPUs is only for tests with tiny weights")
    return max(world, 1)


def prepare_weights(config: ServingConfig, plan: EnginePlan) -> None:
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
        for variant in plan.engine.preload:
            check_layout(plan.weights_dir, variant)
    except MissingWeightsError as err:
        first_line = str(err).splitlines()[0]
        if not config.download:
            raise RuntimeError(f"{first_line}; downloading is disabled (GAMECRAFT_DOWNLOAD=0)") from None
        try:
            download_weights(plan.weights_dir, plan.engine.preload, token=config.hf_token)
        except Exception as download_err:  # noqa: BLE001 - one clear line for SETUP_FAILED
            raise RuntimeError(f"{first_line}, and downloading them failed: "
                               f"{type(download_err).__name__}: {str(download_err).splitlines()[0]}") from None
    # torch reads its compiler-cache location from the environment, before it first compiles; a value the
    # operator set wins.
    if config.compile_cache and plan.speed.compile and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        inductor = Path(plan.engine.cache_dir or plan.weights_dir).resolve() / "inductor"
        try:
            inductor.mkdir(parents=True, exist_ok=True)
            if os.access(inductor, os.W_OK):
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(inductor)
        except OSError:  # read-only weights: torch's default (temporary) cache is used
            pass


def load_engine(plan: EnginePlan) -> Engine:
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
        return load_parallel_engine(plan.engine, plan.world_size, list(plan.devices))
    return GameCraftEngine.load(plan.engine)


def random_engine_kwargs(plan: EnginePlan) -> dict:
    """The plan's kernels and compilation as ``gamecraft.testing.random_weights.random_engine`` arguments (one
    random transformer serves both variants, so nothing is swapped)."""
    return dict(attention_backend=plan.speed.attention_backend, fast_attention_backend=plan.speed.fast_attention_backend,
                compile=plan.speed.compile, compile_vae=plan.speed.compile_vae, one_transformer_on_gpu=False)


def warm_up(engine: Engine, plan: EnginePlan) -> WarmUp:
    """Compile and time every pass shape of the plan; if compiling fails (a broken compiler toolchain), run
    eagerly from then on and warm up again, so the model still serves."""
    try:
        return engine.warm_up(plan.warm_shapes, *plan.size)
    except Exception:  # noqa: BLE001 - a broken compiler toolchain must not take the model down
        if not engine.compiled:
            raise
        log.exception("compiling failed during the warm-up; running eagerly")
        engine.disable_compile()
        return engine.warm_up(plan.warm_shapes, *plan.size)


def build_engine(config: ServingConfig, warm: bool = True, devices: list[DeviceInfo] | None = None
                 ) -> ServingEngine:
    """Plan, prepare, load and (``warm``) warm up the engine ``config`` describes."""
    start = time.perf_counter()
    plan = plan_engine(config, devices)
    log.info("engine plan: %s weights%s, %dx%d, %d GPU(s); %s", plan.source,
             f" ({plan.smoke_reason})" if plan.smoke_reason else "", *plan.size, plan.world_size, plan.speed.summary)
    prepare_weights(config, plan)  # missing weights are the first thing to report
    if plan.source == "weights" and plan.engine.device != "cuda":
        raise RuntimeError("no CUDA GPU found: GameCraft needs an 80 GB GPU (H100); set GAMECRAFT_WEIGHTS=tiny "
                           "for a CPU smoke run")
    engine = load_engine(plan)
    try:
        warm_up_result = warm_up(engine, plan) if warm else None
    except BaseException:
        engine.close()
        raise
    costs = costs_from_warm_up(warm_up_result) if warm_up_result is not None else \
        PassCosts(first_pass_s=0.0, later_pass_s=0.0, decode_s=0.0, overhead_s=5.0)
    seconds = time.perf_counter() - start
    log.info("engine ready in %.1fs", seconds)
    return ServingEngine(engine, plan, costs, warm_up_result, seconds)


def _tiny_or_production(source: str) -> TransformerConfig:
    """The transformer architecture of tiny weights (before they are written) or of random ones."""
    return TransformerConfig.tiny() if source == "tiny" else TransformerConfig.production()
