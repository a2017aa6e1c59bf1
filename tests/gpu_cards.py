"""Mocked GPUs for the planning tests: memory as the driver reports it, and compute capabilities."""

from __future__ import annotations

from gamecraft.serving.devices import DeviceInfo

MIB = 1 << 20
# Memory as the driver reports it (nvidia-smi "MiB" totals): T4, L4, L40S/A40, H100 80GB, A100 80GB, H200.
CARD_MEMORY = {16: 15360 * MIB, 24: 23034 * MIB, 48: 46068 * MIB, 80: 81559 * MIB, 141: 143771 * MIB}
CAPABILITIES = {"sm80": (8, 0), "sm89": (8, 9), "sm90": (9, 0)}
ALL_CAPABILITIES = [(7, 0), (7, 5), (8, 0), (8, 6), (8, 7), (8, 9), (9, 0), (10, 0), (12, 0)]


def device(sm: str, gb: int, count: int = 1, nvlink: bool | None = None) -> DeviceInfo:
    return DeviceInfo(f"GPU {sm} {gb}GB", CAPABILITIES[sm], CARD_MEMORY[gb], count, nvlink)
