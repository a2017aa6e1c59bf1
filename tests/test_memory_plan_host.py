"""Host memory of the fp8 "replace" placement (L40S): once exact and go_fast requests have both run,
``Fp8Twin`` keeps two pinned copies per GPU — the bf16 block linears and the fp8 twin — and the memory plan
counts both (it counted the fp8 copy only: ≈ 17 GiB per GPU short)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from gamecraft.engine.twins import Fp8Twin
from gamecraft.model import GameCraftTransformer, TransformerConfig, init_random_
from gamecraft.model.fp8 import FP8Linear, is_fp8_layer
from gamecraft.serving.memory_plan import DEFAULT_COSTS, GIB, HOST_FRACTION, plan_memory, twin_host_bytes
from gamecraft.serving.plan import check_request

L40S = 46068 << 20  # as the driver reports it (nvidia-smi MiB)

# Byte counts from the production model's parameter counts (written out here, not read from ByteCosts):
LINEARS = 9_286_189_056  # the 248 block linears the fp8 twin replaces
SCALES = 2_144_256  # their per-channel float32 scales
BF16_LINEARS = LINEARS * 2
FP8_TWIN = LINEARS * 1 + SCALES * 4
TRANSFORMER = 12_810_795_008 * 2 + 490_929 * 4  # bf16 + fp32 parameters
TEXT = (7_504_924_672 + 123_060_480) * 2  # LLaVA-Llama-3-8B's language model + CLIP-L text, fp16


@pytest.mark.parametrize(
    "gpus, host_gib, parked, go_fast, pinned",
    [
        # 64 GiB hosts: 80 % = 51.2 GiB may be pinned
        (1, 64, False, True, TEXT + BF16_LINEARS + FP8_TWIN),  # 43.1 GB: both fp8 copies fit, no parking
        (4, 64, False, False, TEXT),  # 4 × 27.9 GB of twins cannot fit: go_fast refused
        # 256 GiB hosts: 204.8 GiB may be pinned
        (1, 256, True, True, TEXT + 2 * TRANSFORMER + BF16_LINEARS + FP8_TWIN),  # 94.4 GB: everything parks
        (4, 256, False, True, TEXT + 4 * (BF16_LINEARS + FP8_TWIN)),  # 126.7 GB; parking too would be 331.7
    ],
)
def test_l40s_hosts_count_both_pinned_copies_of_the_fp8_swap(gpus, host_gib, parked, go_fast, pinned):
    plan = plan_memory(L40S, gpus, fp8=True, host_memory_bytes=host_gib * GIB)
    assert not plan.keep_both  # 48 GB holds one transformer
    assert plan.park_on_host == parked
    assert plan.host_pinned == pinned <= HOST_FRACTION * host_gib * GIB
    assert plan.fp8_twin == ("replace" if go_fast else "refused")
    if go_fast:
        check_request(plan, 1, go_fast=True)
    else:
        with pytest.raises(
            ValueError,
            match=r"go_fast swaps fp8 and bf16 weights through 104 GiB of pinned host "
            r"memory on 4 GPU\(s\); this machine has 64 GiB: use go_fast=false",
        ):
            check_request(plan, 1, go_fast=True)
        check_request(plan, 1, go_fast=False)  # exact requests still run


def test_the_plan_counts_what_the_twin_keeps_pinned_after_both_modes():
    """The plan's per-GPU figure for "replace" is what ``Fp8Twin`` really holds once both modes ran (tiny
    model, so the byte costs here are the tiny model's)."""
    model = init_random_(
        GameCraftTransformer(TransformerConfig.tiny(), dtype=torch.bfloat16, device="meta"), 3, device="cpu"
    ).eval()
    linears = [m.weight for name, m in model.named_modules() if is_fp8_layer(name, m)]
    twin = Fp8Twin(model, torch.device("cpu"), "replace")
    twin.use(True)
    twin.use(False)  # both modes ran: both copies exist from now on
    twin.use(True)
    fp8 = [m for m in twin.twin.modules() if isinstance(m, FP8Linear)]
    costs = replace(
        DEFAULT_COSTS,
        fp8_replaced=sum(w.numel() * w.element_size() for w in linears),
        fp8_twin=sum(m.weight_fp8.numel() * m.weight_fp8.element_size() + m.weight_scale.numel() * 4 for m in fp8),
    )
    assert twin._exact.nbytes + twin._go_fast.nbytes == twin_host_bytes(costs, "replace", keep_both=False)
    assert twin_host_bytes(costs, "beside", keep_both=False) == 0
