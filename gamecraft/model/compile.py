"""Regional ``torch.compile`` of the transformer's repeated blocks.

The 20 double-stream and 40 single-stream blocks are compiled one by one (``nn.Module.compile``,
static shapes): blocks of a kind share their compiled code, so compilation costs a few graphs, not
sixty. ``joint_attention`` is excluded from the graphs (``torch.compiler.disable``), so the per-row
text lengths never reach the compiler and a new prompt length never triggers a recompilation. The
shapes that do recompile are the chunk layout (10 or 18 latent frames) and the batch (1 row, or 2 with
guidance): ``setup()`` warms up the ones its presets use.
"""

from __future__ import annotations

import torch

from .transformer import GameCraftTransformer

# All double blocks share one code object (and all single blocks another), and dynamo counts
# recompilations per code object: 2 chunk layouts × 2 batch sizes × exact/fp8 weights × attention
# kernels × sequence-parallel shards exceed its default limit of 8, after which it would silently run
# the blocks eagerly (seen on an H200: the fp8 blocks fell back to eager). Every variant is a fixed
# shape we want compiled, so the limit is raised.
RECOMPILE_LIMIT = 64


def compile_blocks(model: GameCraftTransformer, mode: str | None = None, backend: str = "inductor") -> None:
    """Compile every double/single block of ``model`` in place (idempotent per block)."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    torch._dynamo.config.accumulated_recompile_limit = max(
        torch._dynamo.config.accumulated_recompile_limit, 4 * RECOMPILE_LIMIT
    )
    for block in (*model.double_blocks, *model.single_blocks):
        if not getattr(block, "_gamecraft_compiled", False):
            block.compile(dynamic=False, mode=mode, backend=backend)
            block._gamecraft_compiled = True


def uncompile_blocks(model: GameCraftTransformer) -> None:
    """Back to eager (e.g. when compilation fails at warm-up on a machine without a working toolchain)."""
    for block in (*model.double_blocks, *model.single_blocks):
        block._compiled_call_impl = None
        block._gamecraft_compiled = False


def compiled_block_count(model: GameCraftTransformer) -> int:
    """How many blocks have been wrapped by :func:`compile_blocks`."""
    return sum(bool(getattr(b, "_gamecraft_compiled", False)) for b in (*model.double_blocks, *model.single_blocks))


__all__ = ["compile_blocks", "compiled_block_count", "uncompile_blocks", "torch"]
