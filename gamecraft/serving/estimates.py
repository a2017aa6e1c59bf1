"""The cost model of splitting a pass over several GPUs (Ulysses sequence parallelism and guidance rows):
compute divides, the all-to-all exchange runs over NVLink or PCIe. Pure functions of a
:class:`~gamecraft.serving.devices.DeviceInfo`; the setup log prints :func:`multi_gpu_estimate`'s line.
Measured inputs name their BENCHMARKS.md rows; the others are marked ESTIMATE.
"""

from __future__ import annotations

from dataclasses import dataclass

from gamecraft.parallel.layout import choose_layout

from .devices import DeviceInfo
from .memory_plan import DEFAULT_COSTS, ByteCosts

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
        world=device.count,
        layout=f"guidance {layout.cfg_degree} × sequence {layout.sp_degree}",
        link=link,
        link_gbps=gbps,
        exchange_gb=exchange / 1e9,
        exchange_s=exchange / (gbps * 1e9),
        pass_s=split,
        efficiency=compute / split,
    )
