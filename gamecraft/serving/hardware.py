"""What the GPU can run: kernels, compilation and memory placement chosen from its capability and memory.

(Interim version; the capability and memory plan of the hardware issue extends it.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gamecraft.model.attention import ATTENTION_BACKENDS, fa3_available


@dataclass(frozen=True)
class DeviceInfo:
    """One GPU as the choices see it: ``capability`` (major, minor), memory in bytes, how many of this
    card the machine has, whether they are linked by NVLink (None: unknown)."""

    name: str
    capability: tuple[int, int]
    total_memory_bytes: int
    count: int = 1
    nvlink: bool | None = None


@dataclass(frozen=True)
class SpeedSettings:
    device_name: str
    attention_backend: str
    fast_attention_backend: str
    compile: bool
    compile_vae: bool
    one_transformer_on_gpu: bool
    warm_go_fast: bool
    go_fast_supported: bool = True
    go_fast_note: str | None = None  # why go_fast runs exact here (logged per prediction that asks for it)

    @property
    def summary(self) -> str:
        return (f"{self.device_name}: attention {self.attention_backend}, go_fast attention "
                f"{self.fast_attention_backend}, compile {'on' if self.compile else 'off'}")


def probe_devices(override: str | None = None) -> list[DeviceInfo]:
    """The visible CUDA GPUs (empty without CUDA)."""
    if not torch.cuda.is_available():
        return []
    count = torch.cuda.device_count()
    devices = []
    for index in range(count):
        props = torch.cuda.get_device_properties(index)
        devices.append(DeviceInfo(props.name, (props.major, props.minor), props.total_memory, count))
    return devices


def speed_settings(device: DeviceInfo | None, config) -> SpeedSettings:
    """Kernels and compilation for ``device`` (None: the CPU)."""
    if device is None:
        return SpeedSettings("this CPU", "sdpa", "sdpa", False, False, False, False)
    choice = config.attention
    if choice == "auto":
        choice = "fa3" if fa3_available() else "sdpa"
    elif choice not in ATTENTION_BACKENDS:
        raise ValueError(f"unknown attention backend {choice!r}; expected auto or one of {', '.join(ATTENTION_BACKENDS)}")
    return SpeedSettings(device.name, choice, choice, config.compile, config.compile, not config.keep_both, True)
