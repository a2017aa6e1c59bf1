"""go_fast fp8 linears: the selection rule, quantization error bounds, shared weights, a whole pass."""

from __future__ import annotations

import torch

from gamecraft.model import GameCraftTransformer, PassInputs, TransformerConfig, init_random_
from gamecraft.model.fp8 import FP8_MAX, FP8Linear, fp8_copy, is_fp8_layer, quantize_rows


def _rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float() - b.detach().float()).norm() / b.detach().float().norm())


def test_row_quantization_is_within_e4m3_precision():
    x = torch.randn(64, 256) * torch.logspace(-3, 3, 64)[:, None]  # rows of very different magnitude
    q, scale = quantize_rows(x)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (64, 1)
    assert float(q.float().abs().max()) <= FP8_MAX
    # e4m3 has a 3-bit mantissa: relative error per element ≤ 2^-4, per row far below that in L2
    assert _rel_l2(q.float() * scale, x) < 0.04


def test_fp8_linear_matches_the_linear_closely():
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 512)
    x = torch.randn(3, 40, 256)
    out = FP8Linear(linear)(x)
    assert out.shape == (3, 40, 512)
    assert _rel_l2(out, linear(x)) < 0.05


def test_selection_rule_and_fp8_copy_shares_everything_else():
    config = TransformerConfig.tiny()
    model = init_random_(GameCraftTransformer(config, dtype=torch.float32, device="meta"), 1, device="cpu").eval()
    selected = [n for n, m in model.named_modules() if is_fp8_layer(n, m)]
    # double blocks: qkv, proj, fc1, fc2 for img and txt; single blocks: linear1, linear2; refiner: qkv, proj, fc1, fc2
    expected = config.depth_double_blocks * 8 + config.depth_single_blocks * 2 + config.refiner_depth * 4
    assert len(selected) == expected
    assert not any("mod" in n or n.startswith(("final_layer", "img_in", "camera_net", "time_in")) for n in selected)
    twin = fp8_copy(model)
    assert isinstance(twin.get_submodule(selected[0]), FP8Linear)
    assert isinstance(model.get_submodule(selected[0]), torch.nn.Linear)  # the exact model is untouched
    assert twin.final_layer.linear.weight is model.final_layer.linear.weight  # shared, not copied
    assert twin.double_blocks[0].img_mod.linear.weight is model.double_blocks[0].img_mod.linear.weight

    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 33, 10, 4, 6, generator=g)
    mask = torch.zeros(2, 24, dtype=torch.int64)
    mask[0, :5], mask[1, :17] = 1, 1
    inputs = PassInputs(
        x=x,
        t=torch.full((2,), 900.0),
        text_states=torch.randn(2, 24, 64, generator=g),
        text_mask=mask,
        text_states_2=torch.randn(2, 32, generator=g),
        cam_latents=torch.randn(2, 33, 6, 32, 48, generator=g),
        text_lengths=[5, 17],
    )
    with torch.no_grad():
        exact, go_fast = model(inputs), twin(inputs)
    assert torch.isfinite(go_fast).all()
    assert 0 < _rel_l2(go_fast, exact) < 0.1


def test_fp8_copy_of_a_compiled_model_starts_uncompiled():
    from gamecraft.model.compile import compile_blocks, compiled_block_count

    model = init_random_(
        GameCraftTransformer(TransformerConfig.tiny(), dtype=torch.float32, device="meta"), 1, device="cpu"
    ).eval()
    compile_blocks(model, backend="eager")
    twin = fp8_copy(model)
    assert compiled_block_count(model) == 4 and compiled_block_count(twin) == 0
    compile_blocks(twin, backend="eager")
    assert compiled_block_count(twin) == 4
