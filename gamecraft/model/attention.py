"""Attention without padding masks.

The reference runs ``flash_attn_varlen_func`` over ``[img ; text]`` per batch row with
``cu_seqlens`` segments ``[img + valid text]`` and ``[padded text]``: image tokens and the valid
text tokens attend jointly, padded text tokens only attend among themselves. We reproduce that
exactly by running dense SDPA on each segment (rows with the same valid length share one call).
No mask tensor exists anywhere, so the fast dense kernels (cuDNN, flash) stay usable.

``text_lengths`` are Python ints (valid text tokens per row), computed once per prediction
(:func:`text_lengths_from_mask`), so the blocks contain no host syncs.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Sequence
from typing import Literal, Protocol, get_args

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from .sage import sage_attention
from .sage_reference import FP8_MAX, per_head_fp8_attention_reference

log = logging.getLogger(__name__)

AttentionBackend = Literal["sdpa", "sdpa-math", "sdpa-cudnn", "sdpa-flash", "sdpa-efficient", "fa3", "sage", "fa3-fp8"]
"""How attention is computed.

* ``"sdpa"`` (default): ``torch.nn.functional.scaled_dot_product_attention`` with the priority
  cuDNN > flash > memory-efficient > math. cuDNN is the fastest on H100 (PyTorch's own default
  priority puts flash first, so we set it explicitly).
* ``"sdpa-math"``: the plain math kernel (reference checks).
* ``"sdpa-cudnn"`` / ``"sdpa-flash"`` / ``"sdpa-efficient"``: only that kernel (errors if unusable).

* ``"fa3"``: FlashAttention-3's Hopper forward kernel from the optional ``fa3-fwd`` package (bf16,
  exact up to rounding; on an H200 12 % faster per pass than cuDNN, BENCHMARKS.md). Its FP8 mode was
  measured too and rejected: 0.34–0.44 relative L2 error per pass, against 0.07 for fp8 linears.

* ``"sage"``: SageAttention2's Hopper kernel (int8 Q·Kᵀ after smoothing K, e4m3 P·V; optional
  ``sageattention`` package, :mod:`gamecraft.model.sage`), approximate: ≈ 0.04 relative L2 per call.
  On CPUs it runs the emulation of the same numerics (:mod:`gamecraft.model.sage_reference`).
* ``"fa3-fp8"``: for measurements only — FlashAttention-3's FP8 mode (e4m3 q/k/v, one scale per head),
  the variant rejected above; on CPUs its emulation.

The token refiner always runs exact attention (``"sage"``/``"fa3-fp8"`` map to ``"sdpa"`` there: its 256
text tokens cost nothing). On CPU only ``"sdpa-math"`` restricts the kernel; the GPU-only exact choices fall
back to PyTorch's CPU default there (``"fa3"`` too, so tiny CPU runs accept every name).
"""

ATTENTION_BACKENDS: tuple[str, ...] = get_args(AttentionBackend)
MEASUREMENT_ONLY_BACKENDS = ("fa3-fp8",)  # benchmarks only: never chosen for serving

_KERNELS: dict[str, list[SDPBackend]] = {
    "sdpa": [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
    "sdpa-math": [SDPBackend.MATH],
    "sdpa-cudnn": [SDPBackend.CUDNN_ATTENTION],
    "sdpa-flash": [SDPBackend.FLASH_ATTENTION],
    "sdpa-efficient": [SDPBackend.EFFICIENT_ATTENTION],
}


def check_backend(backend: str) -> None:
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; expected one of {ATTENTION_BACKENDS}")


def fa3_available() -> bool:
    """Whether the optional FlashAttention-3 forward kernel (``pip install fa3-fwd``) imports; when it does
    not, :func:`fa3_unavailable_reason` says why (logged once per process)."""
    return fa3_unavailable_reason() is None


@functools.cache
def fa3_unavailable_reason() -> str | None:
    """Why the FlashAttention-3 kernel cannot be used, or ``None`` when it imports (checked once per process;
    the reason is logged the first time, so a broken ``fa3-fwd`` shows in the setup log instead of every
    pass silently running a slower kernel)."""
    try:
        import fa3_fwd_interface  # noqa: F401
    except Exception as err:  # ImportError, or a binary that does not load with this torch/CUDA
        reason = f"the fa3-fwd package does not import ({type(err).__name__}: {err})"
        log.warning("FlashAttention-3 unavailable: %s", reason)
        return reason
    return None


def _fa3_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    try:
        from fa3_fwd_interface import flash_attn_func
    except Exception as err:
        raise RuntimeError(
            "attention backend 'fa3' needs the fa3-fwd package (FlashAttention-3 forward "
            f"for Hopper GPUs): {type(err).__name__}: {err}"
        ) from err
    return flash_attn_func(q, k, v)  # [B, S, H, D] in and out, scale 1/sqrt(D), non-causal


def _fa3_fp8_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """FA3's FP8 mode: q, k, v [B, S, H, D] to e4m3 with one scale per (row, head), descaled in the kernel."""
    if q.device.type != "cuda":
        return per_head_fp8_attention_reference(q, k, v)
    try:
        from fa3_fwd_interface import flash_attn_func
    except Exception as err:
        raise RuntimeError(
            f"attention backend 'fa3-fp8' needs the fa3-fwd package: {type(err).__name__}: {err}"
        ) from err
    quantized, descales = [], []
    for x in (q, k, v):
        scale = x.float().abs().amax(dim=(1, 3)).clamp_min(1e-12) / FP8_MAX  # [B, H]
        quantized.append((x.float() / scale[:, None, :, None]).to(torch.float8_e4m3fn))
        descales.append(scale.contiguous())
    out = flash_attn_func(*quantized, q_descale=descales[0], k_descale=descales[1], v_descale=descales[2])
    return (out[0] if isinstance(out, tuple) else out).to(q.dtype)


def exact_backend(backend: str) -> str:
    """``backend`` where it is exact; ``"sdpa"`` for the approximate ones (the token refiner's attention)."""
    return "sdpa" if backend in ("sage", "fa3-fp8") else backend


def _kernel_context(backend: str, device: torch.device):
    # On CPU only math / the CPU flash kernel exist; restricting the list there would only error.
    if (device.type != "cuda" and backend != "sdpa-math") or backend == "fa3":
        return contextlib.nullcontext()
    return sdpa_kernel(_KERNELS[backend], set_priority=True)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str) -> torch.Tensor:
    """Dense non-causal attention, scale 1/sqrt(head_dim).

    q, k, v: [B, S, H, D] (token-major, as the projections produce them). Returns [B, S, H, D].
    """
    if backend == "fa3" and q.device.type == "cuda":
        return _fa3_forward(q, k, v)
    if backend == "sage":
        return sage_attention(q, k, v)
    if backend == "fa3-fp8":
        return _fa3_fp8_forward(q, k, v)
    with _kernel_context(backend, q.device):
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def _equal_length_runs(text_lengths: Sequence[int]) -> list[tuple[int, int, int]]:
    """Consecutive rows with the same length: [(first_row, end_row, length), ...]."""
    runs: list[tuple[int, int, int]] = []
    for row, length in enumerate(text_lengths):
        if runs and runs[-1][2] == length:
            runs[-1] = (runs[-1][0], row + 1, length)
        else:
            runs.append((row, row + 1, length))
    return runs


class HeadParallel(Protocol):
    """What :func:`block_attention` needs from a sequence-parallel group (``gamecraft.parallel.ulysses``)."""

    pack_in_graph: bool  # pack the exchange buffers inside the compiled block (False: in the eager exchange)

    def pack_heads(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> list[torch.Tensor]: ...

    def attention(
        self,
        sends: list[torch.Tensor],
        txt_q: torch.Tensor,
        txt_k: torch.Tensor,
        txt_v: torch.Tensor,
        text_lengths: Sequence[int],
        backend: str,
    ) -> tuple[list[torch.Tensor], torch.Tensor]: ...


# Kept out of torch.compile graphs (a graph break per call): the per-row text lengths decide the
# segment shapes, and tracing them would recompile the blocks for every new prompt length. SDPA is
# one kernel anyway, so nothing is lost to fusion.
@torch.compiler.disable
def joint_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, img_len: int, text_lengths: Sequence[int], backend: str
) -> torch.Tensor:
    """Attention over ``[img ; text]`` with the reference's segment semantics, on one device.

    q, k, v: [B, img_len + text_len, H, D]; ``text_lengths[b]`` valid (leading) text tokens of row
    b. Per row, tokens ``[0, img_len + n_b)`` attend among themselves, and so do the padded tokens
    ``[img_len + n_b, L)``. Returns [B, L, H*D].
    """
    return joint_attention_heads(q, k, v, img_len, text_lengths, backend).flatten(2)


# Blocks call attention in three steps so that the graph break sits in the block's own frame (a break
# inside a helper would split the block into more graphs): ``pack_attention`` and ``join_heads`` are
# traced into the compiled block, ``block_attention`` (the kernels and, with ``sp``, the collectives)
# is not. With ``sp`` the send buffers are packed by ``sp.pack_heads`` in the graph, so Inductor writes
# q/k/v straight into the exchange layout, and the image outputs come back as views of the receive
# buffers that the compiled code reads in place.
def pack_attention(
    img_q: torch.Tensor,
    img_k: torch.Tensor,
    img_v: torch.Tensor,
    txt_q: torch.Tensor,
    txt_k: torch.Tensor,
    txt_v: torch.Tensor,
    sp: HeadParallel | None = None,
) -> tuple:
    """The inputs of :func:`block_attention`. img_*: [B, N, H, D] (with ``sp``: this rank's shard of
    the image tokens), txt_*: [B, L, H, D]."""
    if sp is None:
        return (
            torch.cat((img_q, txt_q), dim=1),
            torch.cat((img_k, txt_k), dim=1),
            torch.cat((img_v, txt_v), dim=1),
            img_q.shape[1],
        )
    image = sp.pack_heads(img_q, img_k, img_v) if sp.pack_in_graph else (img_q, img_k, img_v)
    return image, txt_q, txt_k, txt_v


@torch.compiler.disable
def block_attention(
    packed: tuple, text_lengths: Sequence[int], backend: str, sp: HeadParallel | None = None
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """:func:`joint_attention` on :func:`pack_attention`'s output. Returns (the image outputs as parts
    [B, N, (P,) h, D] that :func:`join_heads` joins; the text outputs [B, L, H*D])."""
    if sp is None:
        q, k, v, img_len = packed
        out = joint_attention_heads(q, k, v, img_len, text_lengths, backend)
        return [out[:, :img_len]], out[:, img_len:].flatten(2)
    image, txt_q, txt_k, txt_v = packed
    sends = image if sp.pack_in_graph else sp.pack_heads(*image)
    parts, txt = sp.attention(sends, txt_q, txt_k, txt_v, text_lengths, backend)
    return parts, txt.flatten(2)


def join_heads(parts: list[torch.Tensor]) -> torch.Tensor:
    """Image outputs [B, N, H*D] from :func:`block_attention`'s parts (head groups, in head order)."""
    return (parts[0] if len(parts) == 1 else torch.cat(parts, dim=-2)).flatten(2)


def joint_attention_heads(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, img_len: int, text_lengths: Sequence[int], backend: str
) -> torch.Tensor:
    """:func:`joint_attention` on one device, keeping the heads apart: returns [B, L, H, D]."""
    batch, seq_len = q.shape[0], q.shape[1]
    if len(text_lengths) != batch:
        raise ValueError(f"{len(text_lengths)} text lengths for a batch of {batch}")
    rows = []
    for first, end, length in _equal_length_runs(text_lengths):
        split = img_len + length
        if not 0 <= length <= seq_len - img_len:
            raise ValueError(f"text length {length} outside [0, {seq_len - img_len}]")
        segments = [sdpa(q[first:end, :split], k[first:end, :split], v[first:end, :split], backend)]
        if split < seq_len:
            segments.append(sdpa(q[first:end, split:], k[first:end, split:], v[first:end, split:], backend))
        rows.append(segments[0] if len(segments) == 1 else torch.cat(segments, dim=1))
    return rows[0] if len(rows) == 1 else torch.cat(rows, dim=0)


def refiner_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, text_lengths: Sequence[int], backend: str
) -> torch.Tensor:
    """Self-attention of the token refiner with the reference's mask semantics, without a mask.

    The reference masks key j for query i unless both are valid, and always allows key 0 (to
    avoid an all-masked row). Hence valid queries attend to the valid keys, and every padded query
    sees only key 0, i.e. its output is exactly ``v[:, 0]``.
    q, k, v: [B, text_len, H, D]. Returns [B, text_len, H*D].
    """
    batch, seq_len = q.shape[0], q.shape[1]
    if len(text_lengths) != batch:
        raise ValueError(f"{len(text_lengths)} text lengths for a batch of {batch}")
    backend = exact_backend(backend)
    rows = []
    for first, end, length in _equal_length_runs(text_lengths):
        if not 0 <= length <= seq_len:
            raise ValueError(f"text length {length} outside [0, {seq_len}]")
        valid = max(length, 1)  # with no valid token everybody attends to key 0 only
        parts = [
            sdpa(q[first:end, :valid], k[first:end, :valid], v[first:end, :valid], backend)
            if length
            else v[first:end, :1]
        ]
        if valid < seq_len:
            parts.append(v[first:end, :1].expand(-1, seq_len - valid, -1, -1))
        rows.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=1))
    out = rows[0] if len(rows) == 1 else torch.cat(rows, dim=0)
    return out.flatten(2)


def text_lengths_from_mask(text_mask: torch.Tensor) -> list[int]:
    """Valid text tokens per row of a right-padded 0/1 mask [B, text_len] (one host sync).

    Call once per prediction, outside the denoising loop. Raises ``ValueError`` for a mask that is
    not right-padded (the reference's ``cu_seqlens`` assume the valid tokens come first).
    """
    mask = text_mask.detach().to("cpu", torch.int64)
    lengths = mask.sum(dim=1)
    positions = torch.arange(mask.shape[1])
    expected = (positions[None, :] < lengths[:, None]).to(torch.int64)
    if not torch.equal(mask, expected):
        raise ValueError("text_mask must be a right-padded 0/1 mask (valid tokens first)")
    return [int(n) for n in lengths]
