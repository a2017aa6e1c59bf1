"""What every rank executes for one command: a split transformer pass, or a share of the VAE tiles.

The same code runs on rank 0 (inside the predictor, driven by :mod:`gamecraft.parallel.engine`) and on
the worker ranks (driven by :mod:`gamecraft.parallel.runtime`), so every rank issues the same
collectives in the same order. Rank 0 announces each command (a small dataclass of :mod:`.commands`: shapes,
dtypes, text lengths, flags); the tensors then follow as broadcasts from rank 0 in a fixed order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

from gamecraft.model import PassInputs, StepCache

from .commands import Command, DecodeTiles, DisableCompile, Forward, TensorMeta, dtype_from_name
from .layout import ParallelLayout, choose_layout
from .ulysses import SequenceParallel


@dataclass
class Groups:
    """Process groups made once at start-up (every rank creates every group, in the same order)."""

    command: object  # gloo group for the small command objects
    sp: dict[ParallelLayout, SequenceParallel | None]  # this rank's sequence-parallel group per layout


def make_groups(world_size: int, rank: int, num_heads: int) -> Groups:
    command = dist.new_group(list(range(world_size)), backend="gloo")
    sp: dict[ParallelLayout, SequenceParallel | None] = {}
    for rows in (1, 2):
        try:
            layout = choose_layout(world_size, rows, num_heads)
        except ValueError:
            continue
        if layout in sp:
            continue
        mine = None
        for ranks in layout.sp_groups():
            group = dist.new_group(ranks) if layout.sp_degree > 1 else None
            if rank in ranks and group is not None:
                mine = SequenceParallel(group, ranks.index(rank), layout.sp_degree)
        sp[layout] = mine
    return Groups(command, sp)


class PassRunner:
    """One rank's side of the split passes; holds the camera/rope tensors and the step cache between
    passes of a chunk."""

    TENSORS = ("x", "t", "text_states", "text_mask", "text_states_2")

    def __init__(self, engine, groups: Groups, rank: int, world_size: int):
        self.engine = engine
        self.groups = groups
        self.rank = rank
        self.world_size = world_size
        self.device = torch.device(engine.device)
        self.camera_tokens: torch.Tensor | None = None
        self.rope: tuple[torch.Tensor, torch.Tensor] | None = None
        self.cache: StepCache | None = None

    def _broadcast(self, tensor: torch.Tensor | None, meta: TensorMeta) -> torch.Tensor:
        if self.rank != 0:
            tensor = torch.empty(meta.shape, dtype=dtype_from_name(meta.dtype), device=self.device)
        dist.broadcast(tensor, src=0)
        return tensor

    def run(self, command: Command, payload=None):
        """Run this rank's share of ``command`` (``payload``: rank 0's tensors, None elsewhere)."""
        if isinstance(command, Forward):
            return self.forward(command, payload)
        if isinstance(command, DecodeTiles):
            return self.decode_tiles(command, payload)
        if isinstance(command, DisableCompile):
            return self.engine.disable_compile()
        raise TypeError(f"not a pass command: {command!r}")

    def forward(self, command: Forward, tensors: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """One transformer pass, split by the layout for its row count; every rank returns all rows.
        ``tensors`` (rank 0 only) are broadcast in the fixed order of ``command.shapes``."""
        tensors = tensors or {}
        shapes = command.shapes
        args = {name: self._broadcast(tensors.get(name), shapes[name]) for name in self.TENSORS}
        if command.new_camera:
            self.camera_tokens = self._broadcast(tensors.get("camera_tokens"), shapes["camera_tokens"])
        if command.new_rope:
            self.rope = (
                self._broadcast(tensors.get("rope_cos"), shapes["rope_cos"]),
                self._broadcast(tensors.get("rope_sin"), shapes["rope_sin"]),
            )
        if command.cache == "reset":
            self.cache = StepCache()
        elif command.cache == "none":
            self.cache = None
        model = self.engine.transformer(command.variant, go_fast=command.go_fast)
        rows = args["x"].shape[0]
        layout = choose_layout(self.world_size, rows, model.config.num_heads)
        group = self.groups.sp[layout]
        sp = group.with_options(command.head_chunks, command.pack_in_graph) if group is not None else None
        text_lengths = list(command.text_lengths)
        camera = self.camera_tokens
        if layout.cfg_degree == 2:  # this rank computes one guidance row
            row = layout.cfg_index(self.rank)
            args = {name: value[row : row + 1] for name, value in args.items()}
            text_lengths = text_lengths[row : row + 1]
            camera = camera[row : row + 1] if camera.shape[0] == rows else camera
        with torch.no_grad():
            inputs = PassInputs(
                x=args["x"],
                t=args["t"],
                text_states=args["text_states"],
                text_mask=args["text_mask"],
                text_states_2=args["text_states_2"],
                camera_tokens=camera,
                rope=self.rope,
                text_lengths=text_lengths,
                cache=self.cache,
                use_cache=command.use_cache,
                attention_backend=command.backend,
            )
            out = model(inputs, sp=sp)
        if layout.cfg_degree == 2:
            parts = [torch.empty_like(out) for _ in range(self.world_size)]
            dist.all_gather(parts, out.contiguous())
            out = torch.cat([parts[0], parts[layout.sp_degree]], dim=0)
        return out

    def decode_tiles(self, command: DecodeTiles, tiles: list[torch.Tensor] | None = None) -> list[torch.Tensor] | None:
        """Decode the VAE tiles spread over the ranks (:func:`tile_owners`); rank 0 gets every decoded tile.

        ``command.tiles`` / ``command.outputs``: the latent tiles' and the decoded tiles' shapes (both known
        to rank 0 from the tile grid). Every rank first decodes all of its
        tiles, then the tiles travel to rank 0 in tile order, so no rank waits on another mid-way.
        """
        vae = self.engine.vae
        received = [self._broadcast(tiles[i] if tiles else None, meta) for i, meta in enumerate(command.tiles)]
        owners = tile_owners([meta.shape for meta in command.tiles], self.world_size)
        decoded: list[torch.Tensor | None] = [None] * len(received)
        with torch.no_grad(), vae.autocast():
            for index, tile in enumerate(received):
                if owners[index] == self.rank:
                    dtype = dtype_from_name(command.outputs[index].dtype)
                    decoded[index] = vae.decode_tile(tile).to(dtype).contiguous()
        for index, owner in enumerate(owners):  # each pair (owner, 0) sends and receives in the same order
            if owner == 0:
                continue
            if self.rank == owner:
                dist.send(decoded[index], dst=0)
            elif self.rank == 0:
                meta = command.outputs[index]
                decoded[index] = torch.empty(meta.shape, dtype=dtype_from_name(meta.dtype), device=self.device)
                dist.recv(decoded[index], src=owner)
        return decoded if self.rank == 0 else None


def tile_owners(shapes: list, world_size: int) -> list[int]:
    """Which rank decodes each tile: largest tiles first, each to the least-loaded rank (work ∝ the
    latent tile's element count). Deterministic, so every rank computes the same assignment.

    For the 28 tiles of a 704×1216 chunk on 8 ranks, round-robin gives the busiest rank 3 584 latent
    pixels per frame (2 800 on average); this gives 3 072, the least possible, since some rank must
    take three of the 18 full 32×32 tiles."""
    load = [0] * world_size
    owners = [0] * len(shapes)
    for index in sorted(range(len(shapes)), key=lambda i: (-math.prod(shapes[i]), i)):
        rank = min(range(world_size), key=lambda r: (load[r], r))
        owners[index] = rank
        load[rank] += math.prod(shapes[index])
    return owners
