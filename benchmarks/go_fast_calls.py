"""The per-attention-call suite of ``bench_go_fast.py`` (see its docstring): seconds and relative L2 of each
attention kernel against exact float32 attention on sampled query rows, plus the emulation of SageAttention's
scheme (``gamecraft.model.sage_reference``) on the same tensors."""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from gamecraft.model.attention import sdpa
from gamecraft.model.sage_reference import (
    quantize_keys,
    quantize_queries,
    quantize_values,
    quantized_attention,
    relative_l2,
    smooth_keys,
    with_key_outliers,
)

KEY_KINDS = {"random": None, "outliers-moderate": (1.0, 8.0), "outliers-strong": (2.0, 16.0)}  # (offset std, large)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int = 1) -> tuple[float, object]:
    """(best seconds of ``repeats`` calls, the last output)."""
    best, out = math.inf, None
    for _ in range(repeats):
        sync(device)
        begin = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - begin)
    return best, out


# -- per attention call ------------------------------------------------------------------------------------
def sample_rows(tokens: int, blocks: int = 32, block: int = 64) -> torch.Tensor:
    """Query rows of ``blocks`` 64-row blocks spread evenly (the last, partial block included)."""
    count = math.ceil(tokens / block)
    starts = sorted({round(i * (count - 1) / max(blocks - 1, 1)) * block for i in range(min(blocks, count))})
    return torch.cat([torch.arange(s, min(s + block, tokens)) for s in starts])


def exact_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: torch.Tensor, heads_per_step: int = 4):
    """Exact attention of the query ``rows`` in float32 (math kernel, no TF32): [B, len(rows), H, D]."""
    parts = []
    for first in range(0, q.shape[2], heads_per_step):
        h = slice(first, first + heads_per_step)
        qh, kh, vh = (x[:, :, h].float().transpose(1, 2) for x in (q[:, rows], k, v))
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
            parts.append(F.scaled_dot_product_attention(qh, kh, vh).transpose(1, 2))
    return torch.cat(parts, dim=2)


def emulated_sage_rows(q, k, v, rows) -> torch.Tensor:
    """The emulation of SageAttention's scheme for the query ``rows`` (quantization over all tokens, as the kernel)."""
    q_values, q_scale = quantize_queries(q)
    k_values, k_scale = quantize_keys(smooth_keys(k))
    v_values, v_scale = quantize_values(v)
    return quantized_attention(
        q_values[:, rows], q_scale[:, rows], k_values, k_scale, v_values, v_scale, q.shape[-1] ** -0.5
    ).to(q.dtype)


def call_suite(report, args, device: torch.device, kernels: dict) -> None:
    """Every kernel of ``kernels`` on every token count of ``args.tokens`` and every key kind; rows go to
    ``report.add(**row)``."""
    heads, dim = (4, 32) if args.tiny else (24, 128)
    for tokens in args.tokens:
        g = torch.Generator().manual_seed(tokens)
        q, k_random, v = (torch.randn(1, tokens, heads, dim, generator=g) for _ in range(3))
        q, k_random = ((x * args.logit_std**0.5).to(device, torch.bfloat16) for x in (q, k_random))
        v = v.to(device, torch.bfloat16)
        rows = sample_rows(tokens).to(device)
        flops = 4 * tokens * tokens * dim * heads
        for kind, outliers in KEY_KINDS.items():
            k = k_random
            if outliers is not None:
                k = with_key_outliers(k_random, g, offset_std=outliers[0], large_offset=outliers[1])
            want = exact_rows(q, k, v, rows)
            outputs = {}
            for name, backend in kernels.items():
                if backend is None:
                    continue

                def call(q=q, k=k, v=v, backend=backend):
                    return sdpa(q, k, v, backend)

                try:
                    timed(call, device)  # warm-up (first-call setup, Triton JIT)
                    seconds, out = timed(call, device, args.call_repeats)
                except Exception as err:  # an unusable kernel: recorded, the run goes on
                    report.add(kind="call", tokens=tokens, keys=kind, method=name, error=f"{type(err).__name__}: {err}")
                    continue
                outputs[name] = out[:, rows]
                measured = dict(ms=round(seconds * 1e3, 2), tflops=round(flops / seconds / 1e12, 1))
                error = relative_l2(out[:, rows], want)
                report.add(
                    kind="call",
                    tokens=tokens,
                    keys=kind,
                    method=name,
                    backend=backend,
                    **measured,
                    rel_l2=round(error, 5),
                )
            seconds, emulated = timed(lambda q=q, k=k, v=v, rows=rows: emulated_sage_rows(q, k, v, rows), device)
            vs_kernel = round(relative_l2(outputs["sage"], emulated), 5) if "sage" in outputs else None
            report.add(
                kind="call",
                tokens=tokens,
                keys=kind,
                method="sage-emulated",
                rows=len(rows),
                ms_sampled_rows=round(seconds * 1e3, 1),
                rel_l2=round(relative_l2(emulated, want), 5),
                rel_l2_vs_kernel=vs_kernel,
            )
            del want, outputs, emulated
