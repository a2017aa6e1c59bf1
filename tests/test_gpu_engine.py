"""On a CUDA GPU (skipped elsewhere): the fp8 twin placed "replace" really frees the bf16 block linears' GPU
memory while go_fast runs, and brings them back (the values unchanged) for exact passes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from gamecraft.engine.twins import Fp8Twin
from gamecraft.model import GameCraftTransformer, TransformerConfig, init_random_
from gamecraft.model.fp8 import is_fp8_layer

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9),
    reason="needs a CUDA GPU with fp8 tensor cores (sm89+)",
)


@torch.no_grad()
def test_replace_placement_frees_and_restores_the_bf16_linears_on_the_gpu():
    config = dataclasses.replace(TransformerConfig.tiny(), hidden_size=512, num_heads=4, rope_dim_list=(32, 48, 48))
    model = init_random_(GameCraftTransformer(config, dtype=torch.bfloat16, device="meta"), 1, device="cuda").eval()
    linears = sum(m.weight.numel() * 2 for name, m in model.named_modules() if is_fp8_layer(name, m))
    weights = {name: m.weight.clone() for name, m in model.named_modules() if is_fp8_layer(name, m)}
    twin = Fp8Twin(model, torch.device("cuda"), "replace")
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    twin.use(True)
    torch.cuda.synchronize()
    freed = before - torch.cuda.memory_allocated()
    assert freed >= 0.95 * linears, (freed, linears)
    fp8_bytes = sum(
        m.weight_fp8.numel() + m.weight_scale.numel() * 4 for m in twin.twin.modules() if hasattr(m, "weight_fp8")
    )
    twin.use(False)  # the bf16 linears come back, the fp8 weights leave
    torch.cuda.synchronize()
    assert abs(torch.cuda.memory_allocated() - (before - fp8_bytes)) <= 0.05 * linears
    for name, m in model.named_modules():
        if name in weights:
            assert m.weight.device.type == "cuda" and torch.equal(m.weight, weights[name])
