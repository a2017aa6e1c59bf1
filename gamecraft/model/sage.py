"""Attention backend ``"sage"``: SageAttention2's Hopper kernel, or its emulation off the GPU.

On a CUDA device of compute capability 9.0 the optional ``sageattention`` package (thu-ml/SageAttention,
built from a pinned source for sm90; see docs/go-fast.md) runs ``sageattn_qk_int8_pv_fp8_cuda_sm90``:
int8 Q·Kᵀ after smoothing K, e4m3 P·V with two-level float32 accumulation, per-thread Q/K scales
(what its own ``sageattn()`` picks on sm90). On CPUs the same numerics run through
:mod:`gamecraft.model.sage_reference` (slow; for tests and tiny models), so the sharded and
one-device paths can be compared with sage numerics without a GPU.

:func:`sage_unavailable_reason` says, for a device, why the backend cannot run there (``None`` when it
can). Callers that choose kernels (``go_fast``) use it to fall back; the backend itself raises
``RuntimeError`` with that reason rather than silently computing something else.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import torch

from .sage_reference import sage_attention_reference

log = logging.getLogger(__name__)

KERNEL_NAME = "sageattn_qk_int8_pv_fp8_cuda_sm90"
HEAD_DIMS = (64, 128)  # the sm90 kernel's instantiations (smaller dims are zero-padded by its wrapper)


@functools.cache
def _load_kernel() -> tuple[Callable | None, str | None]:
    """(the kernel function, None) or (None, why it cannot be used). Imports once per process."""
    try:
        import sageattention.core as core
    except Exception as err:  # ImportError, or a binary built for another torch/CUDA that fails to load
        return None, f"the sageattention package does not import ({type(err).__name__}: {err})"
    if not getattr(core, "SM90_ENABLED", False):
        # core.py swallows the import error of its sm90 extension; importing it again tells why
        try:
            import sageattention._qattn_sm90  # noqa: F401
        except Exception as err:
            return None, f"sageattention has no usable sm90 kernel ({type(err).__name__}: {err})"
        return None, "sageattention was built without its sm90 kernel"
    kernel = getattr(core, KERNEL_NAME, None)
    if kernel is None:
        return None, f"sageattention has no {KERNEL_NAME} (unexpected version)"
    return kernel, None


def sage_unavailable_reason(device: torch.device | str) -> str | None:
    """Why backend ``"sage"`` cannot run on ``device``, or ``None`` when it can.

    CPU: always runs (the reference emulation). CUDA: needs compute capability 9.0 (the kernel uses
    Hopper's wgmma/TMA) and an importable ``sageattention`` with its sm90 extension.
    """
    device = torch.device(device)
    if device.type == "cpu":
        return None
    if device.type != "cuda":
        return f"no SageAttention kernel for {device.type} devices"
    if not torch.cuda.is_available():
        return "CUDA is not available"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) != (9, 0):
        return f"the SageAttention sm90 kernel needs compute capability 9.0 (Hopper); this GPU has {major}.{minor}"
    return _load_kernel()[1]


def sage_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Non-causal attention with SageAttention2 numerics, scale 1/√D.

    q, k, v: [B, S, H, D] ("NHD", the last dimension contiguous; other strides may be views, as the
    segments of :func:`gamecraft.model.attention.joint_attention_heads` and the Ulysses receive buffers).
    Returns [B, Sq, H, D] in q's dtype. On CUDA, float32 inputs are run in bfloat16 (the kernel takes
    16-bit inputs) and returned as float32.
    """
    if q.device.type == "cpu":
        return sage_attention_reference(q, k, v)
    reason = sage_unavailable_reason(q.device)
    if reason is not None:
        raise RuntimeError(f"attention backend 'sage' cannot run on {q.device}: {reason}")
    head_dim = q.shape[-1]
    if head_dim > max(HEAD_DIMS):
        raise ValueError(f"SageAttention's sm90 kernel supports head_dim ≤ {max(HEAD_DIMS)}, got {head_dim}")
    kernel = _load_kernel()[0]
    dtype = q.dtype
    if dtype not in (torch.float16, torch.bfloat16):
        q, k, v = (x.to(torch.bfloat16) for x in (q, k, v))
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    out = kernel(
        q,
        k,
        v,
        tensor_layout="NHD",
        is_causal=False,
        qk_quant_gran="per_thread",
        sm_scale=head_dim**-0.5,
        pv_accum_dtype="fp32+fp32",
        smooth_k=True,
        return_lse=False,
    )
    return out.to(dtype)
