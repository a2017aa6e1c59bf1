"""What this GPU can run, decided once at setup: attention kernel, fp8 linears, compilation, memory plan.

Everything here is a pure function of a :class:`DeviceInfo` (name, compute capability, memory per GPU,
GPU count, NVLink) except :func:`probe_devices`, which reads it from ``torch.cuda``. ``None`` stands
for "no CUDA GPU" (CPU smoke runs with tiny weights), where every choice keeps today's CPU behaviour.

Capabilities (NVIDIA's compute capability ``(major, minor)``):

* FlashAttention-3 (``fa3-fwd``) and the planned 8-bit SageAttention kernel (``"sage"``, go_fast only)
  run on Hopper only: sm90 (H100, H200). Not on sm100 (Blackwell): FA3's kernels are sm90-specific.
* cuDNN and flash SDPA need sm80+ (A100 sm80, A40/A10 sm86, L4/L40S sm89); GameCraft needs sm80+ anyway
  (bf16 tensor cores).
* fp8 linears (``torch._scaled_mm`` with row-wise scales) need sm89+ (Ada, Hopper, newer). PyTorch
  builds the row-wise kernel for sm89 (a CUTLASS 2.x kernel) and sm90; on sm89 with torch < 2.12 it is
  reported to ignore the current CUDA stream (pytorch/pytorch#177651). Harmless here: the blocks run on
  the default stream. Not measured on an sm89 GPU yet.

Memory: :mod:`gamecraft.serving.memory_plan` (byte costs and the plan). Several GPUs: :func:`multi_gpu_estimate`
models the Ulysses exchange over NVLink or PCIe.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from gamecraft.parallel.layout import choose_layout
from gamecraft.serving.memory_plan import DEFAULT_COSTS, GIB, ByteCosts, MemoryPlan, min_memory_bytes, plan_memory

log = logging.getLogger(__name__)

MIN_CAPABILITY = (8, 0)  # bf16 tensor cores, cuDNN/flash SDPA
FP8_CAPABILITY = (8, 9)  # e4m3 tensor cores: torch._scaled_mm
# Cards that have no NVLink at all (PCIe only), and SXM parts (NVLink), by the words of the name torch reports.
NO_NVLINK_CARDS = ("L40S", "L40", "L4", "T4", "A10G", "A10")
SXM_CARDS = ("SXM4", "HBM3", "H200")  # "A100-SXM4-80GB", "H100 80GB HBM3" (SXM5); "H200 NVL" is PCIe


@dataclass(frozen=True)
class DeviceInfo:
    """The GPUs one predictor uses. ``total_memory_bytes``: per GPU (the smallest one's), as the driver
    reports it. ``nvlink``: whether the GPUs talk over NVLink; ``None``: one GPU, or unknown."""

    name: str
    capability: tuple[int, int]
    total_memory_bytes: int
    count: int = 1
    nvlink: bool | None = None

    @property
    def sm(self) -> str:
        return f"sm{self.capability[0]}{self.capability[1]}"

    @property
    def total_gib(self) -> float:
        return self.total_memory_bytes / GIB


def probe_devices() -> DeviceInfo | None:
    """The visible CUDA GPUs (``None`` without CUDA). Uncertain: torch cannot tell NVLink from PCIe
    peer-to-peer. ``nvlink`` is read from NVML when ``pynvml`` imports (not a dependency); else False when
    some pair has no peer access or the card has no NVLink at all, True for SXM parts with peer access
    (a heuristic from the name), else ``None`` (unknown)."""
    import torch

    if not torch.cuda.is_available():
        return None
    count = torch.cuda.device_count()
    props = [torch.cuda.get_device_properties(i) for i in range(count)]
    if len({(p.name, p.major, p.minor) for p in props}) > 1:
        log.warning("mixed GPUs %s: planning for the smallest", [p.name for p in props])
    first = props[0]
    nvlink = None
    if count > 1:
        nvlink = _nvml_nvlink(count)
        if nvlink is None:
            peers = all(torch.cuda.can_device_access_peer(i, j) for i in range(count) for j in range(count) if i != j)
            nvlink = False if not peers or _name_has(first.name, NO_NVLINK_CARDS) else None
            if nvlink is None and _name_has(first.name, SXM_CARDS) and "NVL" not in first.name.split():
                nvlink = True
    return DeviceInfo(first.name, (first.major, first.minor), min(p.total_memory for p in props), count, nvlink)


def override_device(device: DeviceInfo, text: str) -> DeviceInfo:
    """``device`` as ``GAMECRAFT_GPU`` describes it: ``NAME:MAJOR.MINOR:GIB`` (e.g. ``NVIDIA L40S:8.9:44.4``),
    for planning a smaller or older card on a big one (the kernels chosen must still run on the real GPU;
    cap the memory with ``torch.cuda.set_per_process_memory_fraction`` to measure). Count and link stay."""
    try:
        name, capability, gib = text.rsplit(":", 2)
        major, minor = (int(v) for v in capability.split("."))
        memory = int(float(gib) * GIB)
    except ValueError:
        raise ValueError(f"GAMECRAFT_GPU must look like 'NVIDIA L40S:8.9:44.4', got {text!r}") from None
    return DeviceInfo(name, (major, minor), memory, device.count, device.nvlink)


def _name_has(name: str, cards: tuple[str, ...]) -> bool:
    words = name.replace("-", " ").split()
    return any(card in words for card in cards)


def probe_host_memory() -> int | None:
    """This container's memory limit (cgroup v2 ``memory.max``), else the machine's ``MemTotal``; None if unknown."""
    limit = Path("/sys/fs/cgroup/memory.max")
    try:
        if limit.is_file() and limit.read_text().strip().isdigit():
            return int(limit.read_text().strip())
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _nvml_nvlink(count: int) -> bool | None:
    """Whether every GPU has an active NVLink (NVML), or None when NVML is not available."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            return all(_any_link_active(pynvml, pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count))
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no NVML on this driver/container: unknown, never fatal
        return None


def _any_link_active(pynvml, handle) -> bool:
    for link in range(pynvml.NVML_NVLINK_MAX_LINKS):
        try:
            if pynvml.nvmlDeviceGetNvLinkState(handle, link) == pynvml.NVML_FEATURE_ENABLED:
                return True
        except pynvml.NVMLError:  # link not present
            continue
    return False


# -- kernels ------------------------------------------------------------------------------------
ATTENTION_CHOICES = ("auto", "fa3", "sage", "sdpa", "sdpa-cudnn", "sdpa-flash", "sdpa-efficient", "sdpa-math")
_HOPPER_ONLY = {"fa3": "fa3-fwd", "sage": "sageattention"}  # kernel -> the package that provides it


def kernel_allowed(kernel: str, capability: tuple[int, int]) -> bool:
    """Whether ``kernel`` (an attention kernel, or ``"fp8"`` for fp8 linears) can run on ``capability``."""
    if kernel in _HOPPER_ONLY:
        return capability[0] == 9
    if kernel == "fp8":
        return capability >= FP8_CAPABILITY
    if kernel in ATTENTION_CHOICES and kernel != "auto":
        return capability >= MIN_CAPABILITY or kernel in ("sdpa", "sdpa-math", "sdpa-efficient")
    raise ValueError(f"unknown kernel {kernel!r}")


@dataclass(frozen=True)
class AttentionChoice:
    """The attention kernel of exact passes and of go_fast passes (``EngineConfig.attention_backend`` /
    ``go_fast_attention_backend``)."""

    exact: str
    go_fast: str


def choose_attention(
    device: DeviceInfo | None, requested: str = "auto", *, fa3_installed: bool, sage_installed: bool = False
) -> AttentionChoice:
    """``GAMECRAFT_ATTENTION``'s kernel for ``device``. ``auto``: FlashAttention-3 on sm90 when ``fa3-fwd``
    imports, else ``sdpa`` (cuDNN first, then flash, memory-efficient, math); go_fast uses ``sage`` on
    sm90 when installed. ``sage`` requested: go_fast only, exact passes as ``auto``. A kernel this GPU
    cannot run is a ``ValueError`` with one line, before anything loads."""
    if requested not in ATTENTION_CHOICES:
        raise ValueError(f"GAMECRAFT_ATTENTION={requested!r}; expected one of {', '.join(ATTENTION_CHOICES)}")
    if device is None:  # CPU: PyTorch's CPU kernels whatever the name (gamecraft.model.attention)
        if requested == "sage":
            raise ValueError("GAMECRAFT_ATTENTION=sage needs a Hopper GPU (sm90); there is no CUDA GPU here")
        kernel = "sdpa" if requested == "auto" else requested
        return AttentionChoice(kernel, kernel)
    if requested != "auto" and not kernel_allowed(requested, device.capability):
        need = "a Hopper GPU (sm90)" if requested in _HOPPER_ONLY else "sm80 or newer"
        raise ValueError(f"GAMECRAFT_ATTENTION={requested} needs {need}; {device.name} is {device.sm}")
    installed = {"fa3": fa3_installed, "sage": sage_installed}
    if requested in _HOPPER_ONLY and not installed[requested]:
        raise ValueError(
            f"GAMECRAFT_ATTENTION={requested} needs the {_HOPPER_ONLY[requested]} package, which does not import here"
        )
    hopper = device.capability[0] == 9
    exact = "fa3" if hopper and fa3_installed else "sdpa"
    if requested not in ("auto", "sage"):
        exact = requested
    fast = "sage" if hopper and sage_installed and requested in ("auto", "sage") else exact
    return AttentionChoice(exact, fast)


def fp8_linears_supported(device: DeviceInfo | None) -> bool:
    """Whether go_fast's fp8 linears can run (sm89+; on the CPU, torch's reference kernel for tests)."""
    return device is None or kernel_allowed("fp8", device.capability)


def go_fast_message(device: DeviceInfo | None) -> str | None:
    """The line each go_fast prediction logs where fp8 is unsupported (it then runs the exact model and
    gives the same video as go_fast=false); ``None`` where go_fast runs fp8."""
    if fp8_linears_supported(device):
        return None
    return (
        f"go_fast: {device.name} ({device.sm}) has no fp8 tensor cores (sm89 or newer needed); running the "
        "exact bf16 model instead (same video as go_fast=false, no speed-up)"
    )


@dataclass(frozen=True)
class CompileSettings:
    """``EngineConfig.compile`` / ``compile_vae``; ``measured``: known to work on this capability."""

    blocks: bool
    vae_decoder: bool
    measured: bool
    note: str


def compile_settings(device: DeviceInfo | None, enabled: bool = True) -> CompileSettings:
    """Regional compile of the blocks and the full-tile VAE decoder wherever Inductor's Triton kernels run
    (sm80+). Measured only on sm90 (H100/H200: −13 % per pass, decode 1.8× faster, BENCHMARKS.md); elsewhere
    unmeasured, with setup()'s existing fallback to eager when compilation fails (one GPU)."""
    if device is None or not enabled:
        return CompileSettings(False, False, False, "off" if device is not None else "no CUDA GPU")
    if device.capability[0] == 9:
        return CompileSettings(True, True, True, "measured on H100/H200")
    return CompileSettings(True, True, False, f"not measured on {device.sm}")


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
        raise ValueError("go_fast needs room for its fp8 weights, which this GPU does not have; use go_fast=false")


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


# -- several GPUs ---------------------------------------------------------------------------------
# The Ulysses exchange's bus bandwidth, GB/s per GPU: measured NCCL all-to-all alone on 4 × H200, NV18 NVLink
# (BENCHMARKS.md, "The exchange alone": 277 MB in 0.697 ms = 299 GB/s).
NVLINK_HOPPER_GBPS = 299.0
NVLINK_AMPERE_GBPS = 199.0  # ESTIMATE: A100's NVLink 3 has 2/3 of NVLink 4's bandwidth (600 vs 900 GB/s)
PCIE_GBPS = 25.0  # ESTIMATE: PCIe 4.0 x16 is 32 GB/s per direction; NCCL over peer-to-peer reaches ≈ 25
# Dense bf16 tensor-core TFLOP/s (NVIDIA datasheets, without sparsity), matched against the device name.
DENSE_BF16_TFLOPS = {
    "H100": 989.4,
    "H200": 989.4,
    "A100": 312.0,
    "L40S": 362.05,
    "A40": 149.7,
    "L4": 121.0,
    "A10": 125.0,
}
# One compiled 18-frame 1-row pass on one H200 (BENCHMARKS.md speed suite): FA3 and cuDNN SDPA.
HOPPER_PASS_S = {"fa3": 5.41, "sdpa": 6.16}


def dense_bf16_tflops(name: str) -> float | None:
    words = name.replace("-", " ").split()
    return next((rate for card, rate in DENSE_BF16_TFLOPS.items() if card in words), None)


def pass_seconds_estimate(device: DeviceInfo, attention: str) -> float | None:
    """One 18-frame 1-row pass on one of these GPUs: measured on Hopper; elsewhere ESTIMATED from the H200's
    cuDNN pass scaled by the dense bf16 rates (assumes the same fraction of peak, likely optimistic)."""
    rate = dense_bf16_tflops(device.name)
    if rate is None:
        return None
    measured = HOPPER_PASS_S["fa3" if attention == "fa3" else "sdpa"]
    return measured * DENSE_BF16_TFLOPS["H200"] / rate


def exchange_bytes_per_pass(world: int, rows: int, frames: int, costs: ByteCosts = DEFAULT_COSTS) -> int:
    """Bytes one GPU sends in a pass's Ulysses all-to-alls (``gamecraft/parallel/ulysses.py``): in each of
    the 60 blocks its image q, k, v [rows, n/P, hidden] bf16 go to the head owners and the outputs
    [rows, n/P, hidden] come back; (P − 1)/P of each leaves the GPU. The text all-gather (256 tokens,
    < 1 %) is left out. Guidance-parallel rows exchange nothing inside the pass."""
    layout = choose_layout(world, rows, costs.num_heads)
    sp = layout.sp_degree
    tokens = rows // layout.cfg_degree * frames * costs.tokens_per_frame
    return round(costs.layers * 4 * tokens / sp * costs.hidden * 2 * (sp - 1) / sp)


@dataclass(frozen=True)
class MultiGpuEstimate:
    """Modeled split of a pass: compute divides perfectly, the exchange runs alone (overlap was measured
    to slow attention more than it hides, BENCHMARKS.md). On 4 × H200 this gives 96 % per pass against
    91 % measured (rank skew and the power cap are not modeled)."""

    world: int
    layout: str  # "guidance 2 × sequence 2"
    link: str
    link_gbps: float
    exchange_gb: float
    exchange_s: float
    pass_s: float  # the split pass (compute + exchange)
    efficiency: float  # 1-GPU time / (world × split time)

    def line(self) -> str:
        return (
            f"{self.world} GPUs over {self.link} ({self.layout}): {self.exchange_gb:.1f} GB exchanged per "
            f"pass ≈ {self.exchange_s:.2f} s, ≈ {self.efficiency:.0%} efficient (modeled)"
        )


def multi_gpu_estimate(
    device: DeviceInfo, rows: int, attention: str = "sdpa", frames: int = 18, costs: ByteCosts = DEFAULT_COSTS
) -> MultiGpuEstimate | None:
    """The modeled cost of splitting a ``rows``-row pass over ``device.count`` GPUs (``None`` for one GPU or
    an unknown card). Unknown links are treated as PCIe (the conservative guess)."""
    one = pass_seconds_estimate(device, attention)
    if device.count < 2 or one is None:
        return None
    layout = choose_layout(device.count, rows, costs.num_heads)
    if device.nvlink:
        link, gbps = "NVLink", NVLINK_HOPPER_GBPS if device.capability[0] >= 9 else NVLINK_AMPERE_GBPS
    else:
        link, gbps = "PCIe" if device.nvlink is False else "PCIe (link unknown)", PCIE_GBPS
    exchange = exchange_bytes_per_pass(device.count, rows, frames, costs)
    compute = rows * one / device.count
    split = compute + exchange / (gbps * 1e9)
    return MultiGpuEstimate(
        device.count,
        f"guidance {layout.cfg_degree} × sequence {layout.sp_degree}",
        link,
        gbps,
        exchange / 1e9,
        exchange / (gbps * 1e9),
        split,
        compute / split,
    )
