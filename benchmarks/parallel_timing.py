"""Timing helpers of ``bench_parallel.py``: every GPU synchronised around a timed call, the relative L2
between outputs, and a profile's kernel time by kind (the exchange, attention, GEMMs, fused, copies)."""

from __future__ import annotations

import time

import torch


def sync() -> None:
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            torch.cuda.synchronize(index)


def timed(fn):
    sync()
    begin = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - begin, out


KERNEL_KINDS = (
    ("nccl", ("nccl",)),
    ("attention", ("flash", "fmha", "attn", "sdpa", "cudnn")),
    ("gemm", ("gemm", "nvjet", "cutlass", "xmma", "matmul", "scaled_mm")),
    ("fused", ("triton",)),  # Inductor's kernels: norms, modulation, RoPE, GELU (names say "to_copy")
    ("copy", ("memcpy", "memset", "copy", "cat", "elementwise_kernel")),
)


def kernel_kind(name: str) -> str:
    """The first kind whose marker occurs in the kernel's name; ``other`` else."""
    lower = name.lower()
    return next((kind for kind, marks in KERNEL_KINDS if any(m in lower for m in marks)), "other")


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def kernel_seconds(prof) -> tuple[dict[str, float], list[tuple[float, str, str]]]:
    """A profile's kernel seconds by kind, and (seconds, kernel name, kind) per kernel, longest first."""
    totals: dict[str, float] = {}
    top = []
    for event in prof.key_averages():
        if torch.cuda.is_available() and event.device_type != torch.autograd.DeviceType.CUDA:
            continue  # kernels only
        us = event.self_device_time_total if torch.cuda.is_available() else event.self_cpu_time_total
        if us:
            kind = kernel_kind(event.key)
            totals[kind] = totals.get(kind, 0.0) + us / 1e6
            top.append((us / 1e6, event.key[:80], kind))
    top.sort(reverse=True)
    return totals, top
