"""Sequence parallel inside compiled blocks: the exchange buffers are packed in the graph, nothing else breaks it.

A group of one rank whose exchanges are copies in this process (``Loopback``) runs the real packing,
attention and unpacking code of :class:`SequenceParallel` through ``torch.compile``d blocks (a
graph-recording backend, no C++ toolchain needed). The multi-rank exchanges themselves are tested with
real gloo processes in ``test_parallel.py``.
"""

from __future__ import annotations

import pytest
import torch

from gamecraft.model import GameCraftTransformer, PassInputs, TransformerConfig, init_random_
from gamecraft.model.compile import compile_blocks, uncompile_blocks
from gamecraft.parallel.ulysses import SequenceParallel


class _Done:
    def wait(self) -> None:
        pass


class Loopback(SequenceParallel):
    """Degree 1 without a process group: every exchange is the identity copy an all-to-all of one rank is."""

    def __init__(self, head_chunks: int, pack_in_graph: bool):
        super().__init__(None, 0, 1, head_chunks=head_chunks, pack_in_graph=pack_in_graph)

    def _send_heads(self, send, sizes, spare_rows):
        unit = send[0, 0].numel()
        recv = send.new_empty((sum(sizes) + spare_rows) * unit)
        recv[: sum(sizes) * unit] = send.reshape(-1)
        return _Done(), recv

    def _send_tokens(self, out, sizes):
        return _Done(), out.permute(1, 0, 2, 3).contiguous().reshape(-1)

    def _gather_heads(self, x):
        return x

    def gather_tokens(self, x, total):
        return x[:, :total]


def _inputs(frames=10, h=4, w=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(2, 24, dtype=torch.int64)
    mask[0, :5], mask[1, :17] = 1, 1
    return dict(
        x=torch.randn(2, 33, frames, h, w, generator=g),
        t=torch.full((2,), 900.0),
        text_states=torch.randn(2, 24, 64, generator=g),
        text_mask=mask,
        text_states_2=torch.randn(2, 32, generator=g),
        cam_latents=torch.randn(2, 33, 6, 8 * h, 8 * w, generator=g),
        text_lengths=[5, 17],
    )


def _is_pack_permute(node) -> bool:
    """The permute of :meth:`SequenceParallel.pack_heads` ([B, n, 3, P, h, D] -> [P, n, 3, B, h, D])."""
    dims = tuple(node.args[1:]) if node.target == "permute" else ()
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    return dims == (3, 1, 2, 0, 4, 5)


@pytest.mark.parametrize("head_chunks", [1, 2])
def test_exchange_buffers_are_packed_inside_the_compiled_blocks(head_chunks):
    torch._dynamo.reset()
    config = TransformerConfig.tiny()
    model = init_random_(GameCraftTransformer(config, dtype=torch.float32, device="meta"), 3, device="cpu").eval()
    inputs = _inputs()
    with torch.no_grad():
        want = model(PassInputs(**inputs))  # one device, eager
    for pack_in_graph in (True, False):
        torch._dynamo.reset()
        graphs = []

        def record(gm, example_inputs, graphs=graphs):
            graphs.append(gm)
            return gm.forward

        uncompile_blocks(model)
        compile_blocks(model, backend=record)
        with torch.no_grad():
            got = model(PassInputs(**inputs), sp=Loopback(head_chunks, pack_in_graph))
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        packs = sum(_is_pack_permute(node) for gm in graphs for node in gm.graph.nodes)
        # one pack per head group in each block kind's graph before attention, or none when packed eagerly
        assert packs == (2 * head_chunks if pack_in_graph else 0)
        assert len(graphs) == 4  # before and after attention, for each of the two block kinds
    uncompile_blocks(model)
