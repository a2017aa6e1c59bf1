"""One way to build the service: :func:`build_service` turns a :class:`ServingConfig` into a :class:`Service`
(the loaded, warmed-up engine with its plan and cost table).

The predictor, the CLI, the local server and the benchmarks that build an engine call it (except
``bench_setup.py``, which times setup's parts one by one), so they all run the same kernels,
compilation, caches and memory placement for the same weights. It runs in three steps:

1. :func:`gamecraft.serving.plan.plan_service` — pure decisions from the configuration and the GPUs found
   (weights source, video size, GPU count, kernels, memory plan, the :class:`EngineConfig`, the pass
   shapes to warm up);
2. :func:`prepare_weights` — fetch a prepared directory (``GAMECRAFT_WEIGHTS_URL``), download missing
   weights, write tiny ones, point the compiler cache at the weights volume; then the compiled kernels of a
   prepared directory made on this machine are loaded (:mod:`gamecraft.serving.artifacts`);
3. :func:`load_engine` and the warm-up (:meth:`gamecraft.engine.Engine.warm_up` on every pass shape of the
   configured presets, timing the preloaded presets'; if compilation fails there, the engine falls back to
   eager and warms up again).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from gamecraft.engine import Engine, GameCraftEngine, WarmUp
from gamecraft.parallel import load_parallel_engine, start_parallel_engine
from gamecraft.testing.random_weights import random_engine, random_worker_spec
from gamecraft.testing.tiny_weights import write_tiny_weights
from gamecraft.weights import MissingWeightsError, check_layout, download_weights

from .artifacts import fetch_prepared, load_kernels, restore_stand_ins, this_machine
from .budget import PassCosts, costs_from_warm_up
from .config import ServingConfig
from .devices import DeviceInfo, driver_problem
from .events import Event
from .generate import GenerationRequest, OutputNames, generate
from .plan import PROBE, ServicePlan, plan_service

log = logging.getLogger(__name__)


@dataclass
class Service:
    """A built, warmed-up engine with its plan, the cost table its warm-up measured and the configuration it
    was built from (the time budget of its requests)."""

    engine: Engine
    plan: ServicePlan
    costs: PassCosts
    warm_up: WarmUp | None
    setup_seconds: float
    config: ServingConfig

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
    if config.weights_url:
        fetch_prepared(config.weights_url, plan.weights_dir)
    restore_stand_ins(plan.weights_dir)
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
    """The plan's kernels and compilation as ``gamecraft.testing.random_weights.random_engine`` arguments. One
    random transformer serves both variants, unless both are preloaded and the plan keeps one transformer on
    the GPU: then each has its own and they swap as the real checkpoints do."""
    config = plan.engine_config
    swap = config.one_transformer_on_gpu and len(set(config.preload)) > 1
    return dict(
        attention_backend=config.attention_backend,
        go_fast_attention_backend=config.go_fast_attention_backend,
        compile=config.compile,
        compile_vae=config.compile_vae,
        vae_compile_scope=config.vae_compile_scope,
        one_transformer_on_gpu=swap,
        distinct_variants=swap,
        text_offload=config.text_offload,
        fp8_twin=config.fp8_twin,
        rows_at_once=config.rows_at_once,
    )


def is_compiler_error(err: BaseException) -> bool:
    """Whether ``err`` comes from torch.compile (Dynamo, a compiler backend, Inductor's code generation or
    its C++/CUDA compile) and not from running a kernel: only those take the warm-up's eager fallback. An
    out-of-memory anywhere in the chain is not (running eagerly needs more memory, not less)."""
    from torch._dynamo.exc import TorchDynamoException
    from torch._inductor.exc import CppCompileError, CUDACompileError

    chain = []
    while err is not None and all(err is not seen for seen in chain):
        chain.append(err)
        err = err.__cause__ or err.__context__
    compiler = (TorchDynamoException, CppCompileError, CUDACompileError)
    if any(isinstance(e, torch.OutOfMemoryError) for e in chain):
        return False
    return any(isinstance(e, compiler) for e in chain)


def warm_up(engine: Engine, plan: ServicePlan) -> WarmUp:
    """Compile and time every pass shape of the plan; if compiling fails (a broken compiler toolchain), run
    eagerly from then on and warm up again, so the model still serves."""
    try:
        return engine.warm_up(plan.warm_shapes, *plan.size, timed=plan.timed_shapes)
    except Exception as err:
        if not engine.compiled or not is_compiler_error(err):
            raise  # a kernel, memory or model error: running eagerly would fail the same way (or need more memory)
        log.exception("compiling failed during the warm-up; running eagerly")
        engine.disable_compile()
        return engine.warm_up(plan.warm_shapes, *plan.size, timed=plan.timed_shapes)


def build_service(
    config: ServingConfig,
    warm: bool = True,
    device: DeviceInfo | None | object = PROBE,
    plan: ServicePlan | None = None,
    kernels: bool = True,
) -> Service:
    """Plan (unless ``plan`` is :func:`plan_service`'s for ``config`` already), prepare, load and (``warm``)
    warm up the engine ``config`` describes; with ``kernels``, first load the compiled kernels a prepared
    weights directory holds for this machine (:mod:`gamecraft.serving.artifacts`)."""
    start = time.perf_counter()
    if config.weights != "tiny" and not config.fallback_to_tiny and plan is None and device is PROBE:
        problem = driver_problem()  # before anything is downloaded: torch would only say "no CUDA GPU"
        if problem is not None:
            raise RuntimeError(problem)
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
    if kernels and (plan.engine_config.compile or plan.engine_config.compile_vae):
        load_kernels(plan.weights_dir, this_machine(plan.engine_config.device))
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
    return Service(engine=engine, plan=plan, costs=costs, warm_up=warm_up_result, setup_seconds=seconds, config=config)
