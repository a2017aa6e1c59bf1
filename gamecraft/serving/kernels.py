"""Which kernels a GPU runs, decided once at setup: the attention kernel of exact and of go_fast passes,
whether go_fast's fp8 linears run, and what is compiled. Pure functions of a
:class:`~gamecraft.serving.devices.DeviceInfo` (``None``: no CUDA GPU, where every choice keeps the CPU
behaviour), except the two questions of what is installed (:func:`fa3_installed`, :func:`sage_installed`).

Capabilities (NVIDIA's compute capability ``(major, minor)``):

* FlashAttention-3 (``fa3-fwd``) and the 8-bit SageAttention kernel (``"sage"``, go_fast only) run on
  Hopper only: sm90 (H100, H200). Not on sm100 (Blackwell): FA3's kernels are sm90-specific.
* cuDNN and flash SDPA need sm80+ (A100 sm80, A40/A10 sm86, L4/L40S sm89); GameCraft needs sm80+ anyway
  (bf16 tensor cores).
* fp8 linears (``torch._scaled_mm`` with row-wise scales) need sm89+ (Ada, Hopper, newer). PyTorch
  builds the row-wise kernel for sm89 (a CUTLASS 2.x kernel) and sm90; on sm89 with torch < 2.12 it is
  reported to ignore the current CUDA stream (pytorch/pytorch#177651). Harmless here: the blocks run on
  the default stream. Not measured on an sm89 GPU yet.
"""

from __future__ import annotations

from dataclasses import dataclass

from gamecraft.model.attention import fa3_available
from gamecraft.model.sage import sage_unavailable_reason

from .devices import DeviceInfo

MIN_CAPABILITY = (8, 0)  # bf16 tensor cores, cuDNN/flash SDPA
FP8_CAPABILITY = (8, 9)  # e4m3 tensor cores: torch._scaled_mm
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
        return AttentionChoice(exact=kernel, go_fast=kernel)
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
    go_fast = "sage" if hopper and sage_installed and requested in ("auto", "sage") else exact
    return AttentionChoice(exact=exact, go_fast=go_fast)


def fp8_linears_supported(device: DeviceInfo | None) -> bool:
    """Whether go_fast's fp8 linears can run: sm89+ and this torch's fp8 GEMM ran there (the probe); on the
    CPU, torch's reference kernel for tests."""
    return device is None or (kernel_allowed("fp8", device.capability) and device.fp8_failure is None)


def go_fast_message(device: DeviceInfo | None) -> str | None:
    """The line each go_fast prediction logs where fp8 is unsupported (it then runs the exact model and
    gives the same video as go_fast=false); ``None`` where go_fast runs fp8."""
    if fp8_linears_supported(device):
        return None
    if device.fp8_failure is not None:
        return (
            f"go_fast: fp8 linears do not run on {device.name} ({device.sm}) with this torch "
            f"({device.fp8_failure}); running the exact bf16 model instead (same video as go_fast=false, "
            "no speed-up)"
        )
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
        note = "off" if device is not None else "no CUDA GPU"
        return CompileSettings(blocks=False, vae_decoder=False, measured=False, note=note)
    if device.capability[0] == 9:
        return CompileSettings(blocks=True, vae_decoder=True, measured=True, note="measured on H100/H200")
    return CompileSettings(blocks=True, vae_decoder=True, measured=False, note=f"not measured on {device.sm}")


def fa3_installed(device: DeviceInfo | None) -> bool:
    """Whether FlashAttention-3 (``fa3-fwd``) imports here (only asked with a GPU)."""
    return device is not None and fa3_available()


def sage_installed(device: DeviceInfo | None) -> bool:
    """Whether the SageAttention kernel loads here (only asked on Hopper)."""
    return device is not None and device.capability[0] == 9 and sage_unavailable_reason("cuda") is None


def go_fast_attention_note(device: DeviceInfo | None, attention: AttentionChoice) -> str | None:
    """The line a go_fast prediction logs where it runs fp8 linears with exact attention (no quantized
    attention kernel here, and why); ``None`` where go_fast's attention is ``sage``, where fp8 does not
    run (:func:`go_fast_message` says so instead) and on the CPU."""
    if device is None or go_fast_message(device) is not None or attention.go_fast == "sage":
        return None
    reason = sage_unavailable_reason("cuda") if device.capability[0] == 9 else "it runs on Hopper (sm90) only"
    return f"go_fast: fp8 linears with {attention.go_fast} attention (no quantized attention: {reason})"
