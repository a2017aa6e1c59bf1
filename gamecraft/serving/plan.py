"""What a service will be, decided before anything loads: :func:`plan_service` turns a
:class:`~gamecraft.serving.config.ServingConfig` and the GPUs found into a :class:`ServicePlan`.

Each decision is its own small function, in the order a refusal is reported: the weights source (a
directory, tiny or random; the tiny fallback and its reason), the GPU count, whether the GPU can run
GameCraft at all, the attention kernels and compilation (:mod:`gamecraft.serving.kernels`), the memory
plan (:mod:`gamecraft.serving.memory_plan`), the :class:`~gamecraft.engine.EngineConfig` and the pass
shapes the warm-up compiles. Apart from asking the machine for its GPUs and host memory
(:mod:`gamecraft.serving.devices`, skipped when a device is given) and which kernels are installed,
everything here is a pure function, so the tests plan any card on any machine.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from gamecraft.engine import EngineConfig, PassShape
from gamecraft.model import TransformerConfig
from gamecraft.parallel import check_world_size
from gamecraft.pipeline.presets import PRESETS, Preset
from gamecraft.weights import smoke_run_reason, transformer_config

from .budget import warm_up_shapes
from .config import ConfigError, ServingConfig
from .devices import DeviceInfo, override_device, probe_devices, probe_fp8, probe_host_memory
from .estimates import multi_gpu_estimate
from .kernels import (
    MIN_CAPABILITY,
    AttentionChoice,
    CompileSettings,
    choose_attention,
    compile_settings,
    fa3_installed,
    fp8_linears_supported,
    go_fast_attention_note,
    go_fast_message,
    kernel_allowed,
    sage_installed,
)
from .memory_plan import DEFAULT_COSTS, GIB, ByteCosts, MemoryPlan, min_memory_bytes, plan_memory

TINY_DIR = Path(tempfile.gettempdir()) / "gamecraft-tiny-weights"
PROBE = object()  # plan_service's default: look at the GPUs of this machine


@dataclass(frozen=True)
class ServicePlan:
    """What :func:`gamecraft.serving.build.build_service` will build. ``source``: ``"weights"``, ``"tiny"``
    or ``"random"``; ``smoke_reason``: why tiny weights replace the real ones (None when they were asked
    for or not used); ``size``: (height, width) of the videos in pixels; ``devices``: one torch device
    name per rank; ``gpu``: the GPU(s) planned for (None: the CPU); ``memory``: their memory plan;
    ``engine_config``: the engine's configuration (``weights_dir`` is the tiny directory for tiny weights;
    for random weights it is unused); ``warm_shapes``: the pass shapes the warm-up compiles;
    ``timed_shapes``: those it also times (the preloaded presets'; the others' costs are derived,
    :class:`gamecraft.serving.budget.PassCosts`; None: all);
    ``go_fast_note``: why go_fast requests run exact here (None: they do not); ``go_fast_attention_note``:
    why go_fast runs fp8 linears with exact attention here (None: it does not); ``summary``: the setup
    log's line."""

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
    go_fast_attention_note: str | None = None
    timed_shapes: tuple[PassShape, ...] | None = None

    @property
    def device_name(self) -> str:
        return self.gpu.name if self.gpu is not None else "this CPU"

    def check_request(self, preset: Preset) -> None:
        """``ValueError`` (one line) for a request this GPU's memory plan refuses, before any GPU work."""
        if self.memory is not None:
            check_request(self.memory, 2 if preset.uses_cfg else 1, preset.go_fast)


def plan_service(
    config: ServingConfig, device: DeviceInfo | None | object = PROBE, host_memory_bytes: int | None | object = PROBE
) -> ServicePlan:
    """Decide everything :func:`gamecraft.serving.build.build_service` does, without loading or writing
    anything. ``device``: the GPU(s) (default: :func:`probe_devices`, with ``GAMECRAFT_GPU``'s override;
    None = no GPU); ``host_memory_bytes``: the host's memory (default: :func:`probe_host_memory`; a plan for
    another machine passes that machine's). ``ConfigError`` / ``RuntimeError`` with one line for what cannot
    run here."""
    found = _devices_found(config) if device is PROBE else device
    source, weights_dir, smoke_reason = weights_source(config, cuda=found is not None)
    on_gpu = found is not None and (source != "tiny" or smoke_reason is None)  # a tiny fallback runs on the CPU
    world = world_size(config, found, on_gpu, source, weights_dir)
    gpu = replace(found, count=world) if on_gpu else None
    attention = _attention(gpu, config.attention)
    compile_ = compile_settings(gpu, config.compile)
    host = probe_host_memory() if host_memory_bytes is PROBE else host_memory_bytes
    memory = plan_for(gpu, host_memory_bytes=host) if gpu is not None else None
    engine_config = engine_config_for(config, source, weights_dir, gpu, attention, compile_, memory)
    return ServicePlan(
        source=source,
        weights_dir=weights_dir,
        smoke_reason=smoke_reason,
        size=config.tiny_size if source == "tiny" else config.size,
        world_size=world,
        devices=tuple(f"cuda:{i}" for i in range(world)) if on_gpu else ("cpu",) * world,
        gpu=gpu,
        attention=attention,
        compile=compile_,
        memory=memory,
        engine_config=engine_config,
        warm_shapes=warm_shapes(config, gpu, memory, engine_config.rows_at_once),
        timed_shapes=warm_shapes(config, gpu, memory, engine_config.rows_at_once, config.preload),
        go_fast_note=go_fast_message(gpu),
        summary=_summary(gpu, attention, memory, compile_),
        go_fast_attention_note=go_fast_attention_note(gpu, attention),
    )


def _devices_found(config: ServingConfig) -> DeviceInfo | None:
    """This machine's GPUs, as ``GAMECRAFT_GPU`` describes them when it is set."""
    device = probe_devices()
    if device is not None and kernel_allowed("fp8", device.capability):
        device = probe_fp8(device)  # on the real GPU: the kernels run there, whatever GAMECRAFT_GPU says
    if device is not None and config.gpu_override:
        device = override_device(device, config.gpu_override)
    return device


def weights_source(config: ServingConfig, cuda: bool) -> tuple[str, Path | None, str | None]:
    """``(source, weights directory, reason for the tiny fallback)``; ``RuntimeError`` for random weights
    without a GPU."""
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


def world_size(
    config: ServingConfig, device: DeviceInfo | None, on_gpu: bool, source: str, weights_dir: Path | None
) -> int:
    """The number of ranks (GPUs, or CPU processes for tiny tests): ``config.gpus``, else every visible GPU;
    ``ConfigError`` naming ``gpus`` for a count this machine or the model's attention heads cannot split."""
    visible = device.count if device is not None else 0
    world = config.gpus if config.gpus is not None else (visible if on_gpu else 1)
    if world > 1 and on_gpu and world > visible:
        raise ConfigError("gpus", world, f"only {visible} GPUs are visible")
    if world > 1 and not on_gpu and source != "tiny":
        raise ConfigError("gpus", world, "more than one GPU without GPUs is only for tests with tiny weights")
    world = max(world, 1)
    heads = (transformer_config(weights_dir) if source == "weights" else _tiny_or_production(source)).num_heads
    try:
        check_world_size(world, heads)
    except ValueError as err:
        raise ConfigError("gpus", world, str(err)) from None
    return world


def _tiny_or_production(source: str) -> TransformerConfig:
    """The transformer architecture of tiny weights (before they are written) or of random ones."""
    return TransformerConfig.tiny() if source == "tiny" else TransformerConfig.production()


def _attention(gpu: DeviceInfo | None, requested: str) -> AttentionChoice:
    """The attention kernels for ``gpu`` after checking that it can run GameCraft at all; ``RuntimeError``
    (one line, for SETUP_FAILED) otherwise."""
    try:
        check_device(gpu)
        return choose_attention(gpu, requested, fa3_installed=fa3_installed(gpu), sage_installed=sage_installed(gpu))
    except ValueError as err:
        raise RuntimeError(str(err)) from None


def engine_config_for(
    config: ServingConfig,
    source: str,
    weights_dir: Path | None,
    gpu: DeviceInfo | None,
    attention: AttentionChoice,
    compile_: CompileSettings,
    memory: MemoryPlan | None,
) -> EngineConfig:
    """The engine's configuration: the kernels and compilation chosen, and on a GPU the memory plan's
    placement (``config.keep_both`` can keep both transformers where the plan would not)."""
    variants = tuple(dict.fromkeys(PRESETS[name].variant for name in config.preload))
    if gpu is None:
        return EngineConfig.for_cpu(weights_dir, preload=variants, go_fast_attention_backend=attention.go_fast)
    return EngineConfig(
        weights_dir=weights_dir or Path("."),
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


def warm_shapes(
    config: ServingConfig,
    gpu: DeviceInfo | None,
    memory: MemoryPlan | None,
    rows_at_once: int,
    names: tuple[str, ...] | None = None,
) -> tuple[PassShape, ...]:
    """The pass shapes of the presets ``names`` (default: those to warm, ``config.warm_presets``, default
    all), and go_fast's where its fp8 twin is built on this GPU (the CPU's twin is for tests only: smoke
    runs do not build it)."""
    presets = [PRESETS[name] for name in (names or config.warm_presets or tuple(PRESETS))]
    go_fast = (
        config.warm_go_fast
        and gpu is not None
        and go_fast_message(gpu) is None
        and memory.fp8_twin in ("beside", "replace")
    )
    return tuple(warm_up_shapes(presets, go_fast=go_fast, rows_at_once=rows_at_once))


def _summary(
    gpu: DeviceInfo | None, attention: AttentionChoice, memory: MemoryPlan | None, compile_: CompileSettings
) -> str:
    estimate = multi_gpu_estimate(gpu, rows=1, attention=attention.exact) if gpu is not None else None
    return summary_line(gpu, attention, memory, compile_, estimate.line() if estimate else "")


# -- memory ---------------------------------------------------------------------------------------
def check_device(device: DeviceInfo | None, costs: ByteCosts = DEFAULT_COSTS) -> None:
    """``ValueError`` (one line, for SETUP_FAILED) for a GPU that cannot run GameCraft at all."""
    if device is None:
        return
    need = min_memory_bytes(device.count, costs)
    if device.total_memory_bytes < need:
        per = " per GPU" if device.count > 1 else ""
        raise ValueError(
            f"{device.name} has {device.total_gib:.1f} GiB{per}; GameCraft needs ≥ {need / GIB:.1f} GiB"
            f"{per} (e.g. an L40S, A100 80GB, H100 or H200)"
        )
    if device.capability < MIN_CAPABILITY:
        raise ValueError(f"{device.name} is {device.sm}; GameCraft needs sm80 or newer (bf16 tensor cores)")


def plan_for(device: DeviceInfo, costs: ByteCosts = DEFAULT_COSTS, host_memory_bytes: int | None = None) -> MemoryPlan:
    """The memory plan of ``device`` (:func:`check_device` first); ``host_memory_bytes``: see
    :func:`probe_host_memory`."""
    check_device(device, costs)
    return plan_memory(device.total_memory_bytes, device.count, fp8_linears_supported(device), costs, host_memory_bytes)


def check_request(plan: MemoryPlan, guidance_rows: int, go_fast: bool) -> None:
    """``ValueError`` (one line) for a request this plan refuses, before any GPU work: guidance rows that
    do not fit, or go_fast where its fp8 twin cannot be built."""
    if guidance_rows == 2 and plan.guidance_refusal:
        raise ValueError(plan.guidance_refusal)
    if go_fast and plan.fp8_twin == "refused":
        raise ValueError(plan.fp8_refusal)


def summary_line(
    device: DeviceInfo | None,
    attention: AttentionChoice,
    plan: MemoryPlan | None,
    compile_: CompileSettings,
    multi_gpu: str = "",
) -> str:
    """One line for the setup log."""
    if device is None or plan is None:
        return f"no CUDA GPU: attention {attention.exact}, CPU smoke runs only"
    gpus = f"{device.count} × " if device.count > 1 else ""
    kernel = {"sdpa": "sdpa (cuDNN first)", "fa3": "FlashAttention-3"}.get(attention.exact, attention.exact)
    fp8 = {
        "beside": "yes",
        "replace": "yes (replacing the bf16 block linears)",
        "refused": "no room",
        "unsupported": "no (go_fast runs exact)",
    }[plan.fp8_twin]
    full = "no" if plan.guidance_refusal else "yes (rows one at a time)" if plan.rows_one_at_a_time else "yes"
    parts = [
        f"{gpus}{device.name} ({device.sm}, {device.total_gib:.1f} GiB)",
        f"attention {kernel}",
        f"fp8 linears {fp8}",
        "distilled yes",
        f"full {full}",
        "both transformers on the GPU"
        if plan.keep_both
        else "one transformer on the GPU"
        + ("" if plan.park_on_host else " (the other reloads from disk: too little host memory)"),
        "text encoders " + ("in pinned host memory" if plan.text_offload else "on the GPU"),
        f"VAE tiles {plan.vae_tile_px} px",
        f"modeled peak {plan.peak / GIB:.1f} of {plan.budget / GIB:.1f} GiB",
        "compiled" + (f" ({compile_.note})" if compile_.blocks else " off"),
    ]
    return ", ".join(parts + ([multi_gpu] if multi_gpu else []))
