"""fp8 block linears for ``go_fast``: e4m3 weights and activations through ``torch._scaled_mm``.

Which layers: as the official ``--use-fp8`` path, every ``nn.Linear`` whose name contains ``block``
and not ``mod`` — the double/single-block projections and MLPs and the token refiner's blocks (9.3 B of
the 12.8 B parameters); modulations, embedders, ``img_in``, the final layer and CameraNet stay in bf16/fp32.

How (differs from the reference, on purpose):

* weights: per output channel scale ``absmax / 448`` (the reference uses one per tensor), quantized once;
* activations: per token scale, computed on the device every call — no ``.item()`` host sync (the
  reference's Triton kernel syncs per layer), and no dependence of one CFG row on the other (its single
  per-tensor activation scale couples them, quirk Q17);
* the product runs on cuBLASLt's fp8 GEMM (``torch._scaled_mm``, row-wise scales), output bf16, bias added
  after.

The non-quantized parameters are shared with the bf16 model (:func:`fp8_copy`), so ``go_fast`` costs
only the fp8 weights (≈ 9.3 GB) on top of the exact model.
"""

from __future__ import annotations

import copy
import functools
import logging

import torch
import torch.nn as nn

log = logging.getLogger(__name__)

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448
_EPS = 1e-12


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise e4m3 quantization of a 2-D tensor: ``(x_fp8 [M, K], scale [M, 1] float32)`` with
    ``x ≈ x_fp8 · scale``."""
    scale = x.abs().amax(dim=-1, keepdim=True).float().clamp_min(_EPS) / FP8_MAX
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


class FP8Linear(nn.Module):
    """Drop-in for ``nn.Linear`` with e4m3 weights (per output channel) and activations (per token)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight, scale = quantize_rows(linear.weight.detach())
        self.register_buffer("weight_fp8", weight)  # [out, in], row-major; its .t() is column-major
        self.register_buffer("weight_scale", scale.t().contiguous())  # [1, out]
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x8, x_scale = quantize_rows(x.reshape(-1, shape[-1]))
        # cuBLASLt's row-wise fp8 GEMM writes bf16; production activations are bf16 already.
        out = torch._scaled_mm(
            x8, self.weight_fp8.t(), scale_a=x_scale, scale_b=self.weight_scale, out_dtype=torch.bfloat16
        )
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.reshape(*shape[:-1], self.out_features).to(x.dtype)


def is_fp8_layer(name: str, module: nn.Module) -> bool:
    """The official selection rule: linears named ``*block*`` but not ``*mod*``."""
    return isinstance(module, nn.Linear) and "block" in name and "mod" not in name


def quantize_linears_(model: nn.Module) -> int:
    """Replace the selected linears of ``model`` by :class:`FP8Linear` in place; returns how many."""
    targets = [(name, module) for name, module in model.named_modules() if is_fp8_layer(name, module)]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, FP8Linear(module))
    return len(targets)


def fp8_copy(model: nn.Module) -> nn.Module:
    """A ``go_fast`` twin of ``model``: selected linears in fp8, every other parameter and buffer shared."""
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    twin = copy.deepcopy(model, memo=dict(shared))
    for module in twin.modules():  # compiled state does not carry over: the caller compiles the twin
        module._compiled_call_impl = None
        if hasattr(module, "_gamecraft_compiled"):
            module._gamecraft_compiled = False
    count = quantize_linears_(twin)
    log.info("fp8 copy: %d linears quantized", count)
    return twin


def fp8_unavailable_reason(device: torch.device | str) -> str | None:
    """Why go_fast's fp8 linears cannot run on ``device`` with this torch, or ``None`` when they can.

    The compute capability alone does not say: cuBLAS reports row-wise ``torch._scaled_mm`` unsupported on
    some cards that have e4m3 tensor cores (sm120, with current torch). So a tiny :class:`FP8Linear`
    (the very call every fp8 block linear makes: 16 tokens × 32 → 16, bf16) runs once per device and
    process; a failure is the reason (``"torch._scaled_mm fails on …: RuntimeError: …"``). One tiny GEMM of
    GPU work; run at plan time, before anything is loaded. cuBLAS refuses an unsupported GEMM with a status
    error, which leaves the CUDA context usable (a sticky fault such as an illegal instruction would not,
    and then fails setup with its own error)."""
    return _probe(str(torch.device(device)))


@functools.cache
def _probe(device: str) -> str | None:
    try:
        with torch.no_grad():
            linear = nn.Linear(32, 16, device=device, dtype=torch.bfloat16)
            out = FP8Linear(linear)(torch.ones(16, 32, device=device, dtype=torch.bfloat16))
            if device.startswith("cuda"):
                torch.cuda.synchronize(device)
        if not torch.isfinite(out.float()).all():
            return f"fp8 linears give non-finite values on {device}"
    except Exception as err:  # noqa: BLE001 - any failure means: no fp8 linears here
        name = torch.cuda.get_device_name(device) if device.startswith("cuda") else device
        return f"torch._scaled_mm fails on {name} with torch {torch.__version__}: {type(err).__name__}: {err}"
    return None
