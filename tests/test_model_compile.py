"""Regional compilation: same outputs as eager, and no recompilation when the prompt length changes."""

from __future__ import annotations

import torch
from torch._dynamo.testing import CompileCounter

from gamecraft.model import GameCraftTransformer, PassInputs, TransformerConfig, init_random_
from gamecraft.model.compile import compile_blocks, compiled_block_count


def _inputs(lengths, frames=10, h=4, w=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = len(lengths)
    mask = torch.zeros(batch, 24, dtype=torch.int64)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    return dict(
        x=torch.randn(batch, 33, frames, h, w, generator=g),
        t=torch.full((batch,), 900.0),
        text_states=torch.randn(batch, 24, 64, generator=g),
        text_mask=mask,
        text_states_2=torch.randn(batch, 32, generator=g),
        cam_latents=torch.randn(batch, 33, 6, 8 * h, 8 * w, generator=g),
        text_lengths=list(lengths),
    )


def test_compiled_blocks_match_eager_and_do_not_recompile_for_new_prompt_lengths():
    torch._dynamo.reset()
    config = TransformerConfig.tiny()
    model = init_random_(GameCraftTransformer(config, dtype=torch.float32, device="meta"), 3, device="cpu").eval()
    eager = {lengths: model(PassInputs(**_inputs(lengths))) for lengths in ((5, 17), (3, 9), (24, 1))}
    counter = CompileCounter()
    compile_blocks(model, backend=counter)
    assert compiled_block_count(model) == config.depth_double_blocks + config.depth_single_blocks
    with torch.no_grad():
        first = model(PassInputs(**_inputs((5, 17))))
        frames_after_first_prompt = counter.frame_count
        for lengths in ((3, 9), (24, 1)):
            assert torch.allclose(model(PassInputs(**_inputs(lengths))), eager[lengths], atol=1e-5, rtol=1e-5)
    assert torch.allclose(first, eager[(5, 17)], atol=1e-5, rtol=1e-5)
    assert counter.frame_count == frames_after_first_prompt  # new text lengths: no new graphs
    assert frames_after_first_prompt <= 4  # shared across blocks: pre/post attention of 2 block kinds
    compile_blocks(model, backend=counter)  # idempotent
    assert compiled_block_count(model) == config.depth_double_blocks + config.depth_single_blocks
