"""GPU memory plan: what stays on each GPU, how guidance rows run, VAE tiles — from a table of byte costs.

Pure functions over plain numbers (per-GPU memory, GPU count, whether fp8 linears exist); the device
side is :mod:`gamecraft.serving.plan` (``plan_for``). Every constant of :class:`ByteCosts` names its source:
computed from the production architecture, measured (BENCHMARKS.md), or an ESTIMATE still to be measured by
``benchmarks/bench_memory.py``.

A plan is the most comfortable configuration whose modeled peaks all fit, in this order of preference:
the fp8 twin beside the bf16 weights (else it replaces the bf16 block linears), both transformers on
the GPU, guidance rows in one batch-2 pass (else two batch-1 passes: half the activations, measured
no slower on an H200), text encoders resident on the GPU (only when everything above is resident too),
and the reference's 256 px VAE tiles. Peaks are modeled for GPU 0 (it also runs the text encoders).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gamecraft.parallel.layout import choose_layout

GIB = 1 << 30
VAE_TILES_PX = (256, 192, 128)  # the reference's sample_size first; smaller tiles change the blending


@dataclass(frozen=True)
class ByteCosts:
    """Bytes on one GPU. 704×1216 video: 3,344 image tokens per latent frame (18 or 10 frames a pass)."""

    # 12,810,795,008 bf16 + 490,929 fp32 parameters of TransformerConfig.production(), counted on the meta
    # device (23.86 GiB; BENCHMARKS.md's "24.3 GiB" after a swap is this plus the VAE).
    transformer: int = 25_623_553_732
    # go_fast's twin: the 248 selected block linears (9,286,189,056 weights) in e4m3 + float32 per-channel
    # scales (2,144,256); the rest is shared (gamecraft/model/fp8.py; BENCHMARKS.md "+9.3 GB").
    fp8_twin: int = 9_294_766_080
    fp8_replaced: int = 18_572_378_112  # the same linears in bf16: what the twin frees when it replaces them
    vae: int = 492_957_606  # 246,478,803 fp16 parameters of the production VAE (computed)
    # LLaVA-Llama-3-8B's language model (7,504,924,672) + CLIP-L text (123,060,480) in fp16 (computed)
    text_encoders: int = 15_255_970_304
    # working memory of one prompt encode: the measured setup() peak 38.755 GiB (bench_setup.json, H200)
    # minus transformer + VAE + text encoders (38.531 GiB)
    text_encode_work: int = 240_000_000
    # Activations of one eager pass, batch rows × latent frames, incl. camera tokens and RoPE tables: the
    # measured peaks (H100, BENCHMARKS.md "Transformer pass, 704×1216") minus the weights. Compiled passes:
    # not measured yet (bench_memory.py).
    activations_1x10: int = 5_254_696_764  # 30.878 GB peak
    activations_1x18: int = 9_400_686_908  # 35.024 GB
    activations_2x10: int = 10_476_446_268  # 36.1 GB
    activations_2x18: int = 18_676_446_268  # 44.3 GB
    # ESTIMATE: one 256 px tile's decoder activations (its largest tensors: 256 ch × 33 × 256² fp16 = 1.1 GB,
    # 2.2 GB in float32 inside GroupNorm) plus the decoded tiles and frames (≈ 1.2 GiB). Upper bound from
    # the measured setup() peak: ≤ 14.4 GiB. Scales with the tile area.
    vae_decode_256px: int = 6 * GIB
    vae_decode_fixed: int = 1_300_000_000  # decoded tiles, the blended video fp16 + float32 + uint8 (computed)
    cuda_context: int = 644_245_094  # ESTIMATE 0.6 GiB outside PyTorch's allocator (CUDA context, modules)
    nccl_buffers: int = GIB  # ESTIMATE, multi-GPU only: NCCL's own buffers for the process groups
    allocator_slack: int = 2 * GIB  # ESTIMATE: caching-allocator fragmentation kept free
    sp_overhead: float = 1.15  # ESTIMATE: Ulysses send/receive buffers on top of 1/P of the activations
    hidden: int = 3072
    num_heads: int = 24
    layers: int = 60  # 20 double + 40 single blocks
    tokens_per_frame: int = 3344  # (704 / 16) × (1216 / 16)
    text_tokens: int = 256

    def activations(self, rows: int, frames: int) -> int:
        table = {
            (1, 10): self.activations_1x10,
            (1, 18): self.activations_1x18,
            (2, 10): self.activations_2x10,
            (2, 18): self.activations_2x18,
        }
        if (rows, frames) not in table:
            raise ValueError(f"no activation figure for {rows} row(s) × {frames} latent frames")
        return table[(rows, frames)]

    def camera_tokens(self, rows: int, frames: int) -> int:
        """The chunk's precomputed camera tokens [rows, tokens, hidden] float32 (held through the chunk)."""
        return rows * frames * self.tokens_per_frame * self.hidden * 4

    def step_cache(self, rows: int, frames: int) -> int:
        """StepCache features [rows, tokens + text, hidden] float32 (kept by the sampler between steps)."""
        return rows * (frames * self.tokens_per_frame + self.text_tokens) * self.hidden * 4

    def vae_decode(self, tile_px: int) -> int:
        return round(self.vae_decode_256px * (tile_px / 256) ** 2) + self.vae_decode_fixed


DEFAULT_COSTS = ByteCosts()


def pass_bytes(costs: ByteCosts, world: int, rows: int, frames: int, step_cache: bool, one_at_a_time: bool) -> int:
    """Working memory of one transformer pass on GPU 0 (weights excluded): its activations, and with
    ``step_cache`` the previous step's StepCache features, alive until this pass replaces them (the
    sampler passes a StepCache in every preset, so from the second step on they always are).
    ``one_at_a_time``: 2 rows as two batch-1 passes (the other row's camera tokens stay allocated). With
    several GPUs the rows go to guidance groups and the tokens are split over each group
    (:func:`gamecraft.parallel.layout.choose_layout`)."""
    layout = choose_layout(world, rows, costs.num_heads)
    rows_here = rows // layout.cfg_degree
    sp = layout.sp_degree
    if rows_here == 2 and one_at_a_time:
        work = costs.activations(1, frames) + costs.camera_tokens(1, frames)
    else:
        work = costs.activations(rows_here, frames)
    work = work / sp * (costs.sp_overhead if sp > 1 else 1.0)
    if step_cache:
        work += costs.step_cache(rows_here, frames) / sp
    return math.ceil(work)


def reserved_bytes(world: int, costs: ByteCosts = DEFAULT_COSTS) -> int:
    """Per GPU memory no plan may use: the CUDA context, NCCL's buffers (several GPUs) and allocator slack."""
    return costs.cuda_context + costs.allocator_slack + (costs.nccl_buffers if world > 1 else 0)


def budget_bytes(memory_bytes: int, world: int, costs: ByteCosts = DEFAULT_COSTS) -> int:
    """What a plan may allocate per GPU (``memory_bytes`` less :func:`reserved_bytes`)."""
    return memory_bytes - reserved_bytes(world, costs)


@dataclass(frozen=True)
class MemoryPlan:
    """Per GPU. ``fp8_twin``: ``"beside"`` (the twin shares the GPU with the bf16 weights), ``"replace"``
    (its fp8 linears take the place of the bf16 block linears, which wait in pinned host memory; only one
    of the two on the GPU at a time), ``"refused"`` (no room to build it: go_fast requests are refused) or
    ``"unsupported"`` (no fp8 on this GPU: go_fast runs the exact model). ``peaks``: modeled peak bytes per
    phase. ``host_pinned``: pinned host memory of all ranks at most (both presets and both modes used:
    :func:`twin_host_bytes`); ``park_on_host``:
    the transformer not in use waits in pinned host memory (else, with too little host memory, switching
    presets reloads it from its safetensors cache)."""

    budget: int
    keep_both: bool
    fp8_twin: str
    rows_one_at_a_time: bool
    guidance_refusal: str | None  # set: requests with guidance > 1 (e.g. the full preset) are refused
    text_offload: bool
    vae_tile_px: int
    peaks: tuple[tuple[str, int], ...]
    host_pinned: int
    park_on_host: bool = True
    fp8_refusal: str | None = None  # why go_fast requests are refused (fp8_twin "refused")

    @property
    def peak(self) -> int:
        return max(bytes_ for _, bytes_ in self.peaks)


def _peaks(
    costs: ByteCosts,
    world: int,
    keep_both: bool,
    twin: str,
    one_at_a_time: bool,
    text_on_gpu: bool,
    tile_px: int,
    guidance: bool,
) -> dict[str, int]:
    transformers = 2 if keep_both else 1
    weights = transformers * costs.transformer + costs.vae
    resident = weights + (transformers * costs.fp8_twin if twin == "beside" else 0)
    resident += costs.text_encoders if text_on_gpu else 0
    peaks = {
        "encode": resident + (0 if text_on_gpu else costs.text_encoders) + costs.text_encode_work,
        "pass_1_row": resident + pass_bytes(costs, world, 1, 18, True, False),
        "decode": resident + costs.vae_decode(tile_px),
    }
    if guidance:  # the full preset: 2 rows
        peaks["pass_2_rows"] = resident + pass_bytes(costs, world, 2, 18, True, one_at_a_time)
    if twin == "replace":  # fp8_copy quantizes from the bf16 weights: both exist until the swap
        peaks["fp8_build"] = weights + costs.fp8_twin
    return peaks


def min_memory_bytes(world: int = 1, costs: ByteCosts = DEFAULT_COSTS) -> int:
    """The smallest per-GPU memory that runs the distilled preset (one transformer, text encoders offloaded,
    exact weights, 256 px VAE tiles)."""
    peaks = _peaks(costs, world, False, "unsupported", False, False, VAE_TILES_PX[0], guidance=False)
    return max(peaks.values()) + reserved_bytes(world, costs)


def _candidates(fp8: bool):
    """(fp8 twin, keep both, rows one at a time, text on GPU), most comfortable first."""
    for twin in ("beside", "replace", "refused") if fp8 else ("unsupported",):
        for keep_both in (True, False):
            for one_at_a_time in (False, True):
                for text_on_gpu in (True, False) if keep_both and twin in ("beside", "unsupported") else (False,):
                    yield twin, keep_both, one_at_a_time, text_on_gpu


def twin_host_bytes(costs: ByteCosts, twin: str, keep_both: bool) -> int:
    """Pinned host memory per GPU of the fp8 twins once exact and go_fast requests have both run. With
    ``"replace"``, :class:`gamecraft.engine.twins.Fp8Twin` keeps two pinned copies per transformer on the
    GPU: the bf16 block linears (parked while go_fast runs) and the twin's fp8 weights (parked while exact
    requests run); each stays allocated once made, so that a switch is one copy each way."""
    if twin != "replace":
        return 0
    return (2 if keep_both else 1) * (costs.fp8_replaced + costs.fp8_twin)


HOST_FRACTION = 0.8  # pinned copies may take this much of the host memory (the rest: process, page cache)


def plan_memory(
    memory_bytes: int,
    world: int = 1,
    fp8: bool = False,
    costs: ByteCosts = DEFAULT_COSTS,
    host_memory_bytes: int | None = None,
) -> MemoryPlan:
    """The plan for GPUs of ``memory_bytes`` each, ``world`` of them per pass; ``fp8``: the GPU has fp8
    linears; ``host_memory_bytes``: the machine's memory, when known. ``ValueError`` when not even the
    distilled preset fits (:func:`min_memory_bytes`)."""
    budget = budget_bytes(memory_bytes, world, costs)
    for guidance in (True, False):  # refuse guidance rows only when nothing else makes them fit
        for tile in VAE_TILES_PX:  # smaller tiles only when nothing else makes the decode fit
            for twin, keep_both, one_at_a_time, text_on_gpu in _candidates(fp8):
                peaks = _peaks(costs, world, keep_both, twin, one_at_a_time, text_on_gpu, tile, guidance)
                if max(peaks.values()) <= budget:
                    return _plan(
                        costs,
                        budget,
                        world,
                        twin,
                        keep_both,
                        one_at_a_time,
                        text_on_gpu,
                        tile,
                        peaks,
                        guidance,
                        host_memory_bytes,
                    )
    raise ValueError(
        f"{memory_bytes / GIB:.1f} GiB per GPU; GameCraft needs ≥ {min_memory_bytes(world, costs) / GIB:.1f} GiB"
    )


def _plan(
    costs, budget, world, twin, keep_both, one_at_a_time, text_on_gpu, tile, peaks, guidance, host_memory
) -> MemoryPlan:
    refusal = None
    if not guidance:
        need = _peaks(costs, world, False, "unsupported", True, False, VAE_TILES_PX[-1], True)["pass_2_rows"]
        refusal = (
            f"guidance > 1 (the full preset) runs two rows per step and needs {need / GIB:.1f} GiB per GPU; "
            f"this GPU has {budget / GIB:.1f} GiB for GameCraft: use guidance 1 (the distilled preset) "
            "or a larger GPU"
        )
    text = 0 if text_on_gpu else costs.text_encoders  # GPU 0 only
    both = 0 if keep_both else 2 * costs.transformer  # every rank's pinned copies once both presets ran
    fp8_refusal = None
    if twin == "refused":
        fp8_refusal = "go_fast needs room for its fp8 weights, which this GPU does not have; use go_fast=false"
    twin_parked = twin_host_bytes(costs, twin, keep_both)
    if host_memory is not None and text + world * twin_parked > HOST_FRACTION * host_memory:
        # the fp8 swap's pinned copies do not fit this host: go_fast is refused rather than the host swapping
        fp8_refusal = (
            f"go_fast swaps fp8 and bf16 weights through {world * twin_parked / GIB:.0f} GiB of pinned host "
            f"memory on {world} GPU(s); this machine has {host_memory / GIB:.0f} GiB: use go_fast=false"
        )
        twin, twin_parked = "refused", 0
    host = text + world * (both + twin_parked)
    park = host_memory is None or host <= HOST_FRACTION * host_memory
    if not park:
        host = text + world * twin_parked
    return MemoryPlan(
        budget=budget,
        keep_both=keep_both,
        fp8_twin=twin,
        fp8_refusal=fp8_refusal,
        rows_one_at_a_time=guidance and one_at_a_time,
        guidance_refusal=refusal,
        text_offload=not text_on_gpu,
        vae_tile_px=tile,
        peaks=tuple(sorted(peaks.items(), key=lambda item: -item[1])),
        host_pinned=host,
        park_on_host=park,
    )
