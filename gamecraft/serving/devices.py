"""The GPUs, driver and host memory this process sees, read once at setup: :func:`probe_devices`,
:func:`probe_host_memory`, and :func:`override_device` for planning another card on this one.

This is the only module of :mod:`gamecraft.serving` that asks the machine; what the GPUs found can run is
decided by pure functions of the :class:`DeviceInfo` it returns (:mod:`gamecraft.serving.kernels`,
:mod:`gamecraft.serving.memory_plan`, :mod:`gamecraft.serving.estimates`). ``None`` stands for "no CUDA
GPU" (CPU smoke runs with tiny weights).

:func:`driver_problem` reads the NVIDIA driver's version without CUDA (``/proc/driver/nvidia/version``, else
``nvidia-smi``): a driver too old for the CUDA torch was built with makes ``torch.cuda.is_available()``
False with a warning few read, and setup used to end in "no CUDA GPU found" after downloading 44 GB.
"""

from __future__ import annotations

import logging
import re
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from .memory_plan import GIB

log = logging.getLogger(__name__)

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
    # why this torch cannot run go_fast's fp8 linears here although the capability has them (the probe:
    # gamecraft.model.fp8.fp8_unavailable_reason); None: they run, or the capability has none
    fp8_failure: str | None = None

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
    return DeviceInfo(
        name=first.name,
        capability=(first.major, first.minor),
        total_memory_bytes=min(p.total_memory for p in props),
        count=count,
        nvlink=nvlink,
    )


def probe_fp8(device: DeviceInfo) -> DeviceInfo:
    """``device`` with ``fp8_failure`` from running go_fast's fp8 GEMM on GPU 0 once
    (:func:`gamecraft.model.fp8.fp8_unavailable_reason`): for GPUs whose capability has fp8, since the
    capability alone does not say whether this torch runs it there. A failure is logged (one line)."""
    from gamecraft.model.fp8 import fp8_unavailable_reason

    failure = fp8_unavailable_reason("cuda:0")
    if failure is not None:
        log.warning("go_fast runs the exact model on this GPU: %s", failure)
    return replace(device, fp8_failure=failure)


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
    return DeviceInfo(
        name=name,
        capability=(major, minor),
        total_memory_bytes=memory,
        count=device.count,
        nvlink=device.nvlink,
        fp8_failure=device.fp8_failure,  # the kernels still run on the real GPU
    )


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


# -- the host driver against the image's CUDA, checked before any byte is downloaded (issue 27) -----------
# CUDA major version -> the oldest driver (major) that runs it (NVIDIA's CUDA toolkit release notes, table 3)
MIN_DRIVER = {13: 580, 12: 525, 11: 450}
PROC_VERSION = Path("/proc/driver/nvidia/version")


def read_driver_version() -> str | None:
    """The loaded NVIDIA kernel module's version (``"570.86.15"``), or None without one."""
    try:
        match = re.search(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)", PROC_VERSION.read_text())
        if match:
            return match.group(1)
    except OSError:
        pass
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.split()
        return out[0] if out else None
    except (OSError, subprocess.SubprocessError):
        return None


def driver_problem(found: str | None = None, cuda: str | None = None) -> str | None:
    """One line when the driver ``found`` (default: this host's) cannot run CUDA ``cuda`` (default:
    torch's), else None (also without a driver or without CUDA: the GPU probe reports those)."""
    found = read_driver_version() if found is None else found
    if cuda is None:
        import torch

        cuda = torch.version.cuda
    if not found or not cuda:
        return None
    need = MIN_DRIVER.get(int(cuda.split(".")[0]))
    if need is None or int(found.split(".")[0]) >= need:
        return None
    return (
        f"the host's NVIDIA driver {found} is too old for this image's CUDA {cuda}, which needs driver {need} "
        f"or newer: run on a host with a newer driver"
    )
