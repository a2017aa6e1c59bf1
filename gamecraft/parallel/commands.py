"""The commands rank 0 sends to every rank: small frozen dataclasses, pickled over the gloo command group.

A command carries only metadata (shapes, dtypes, text lengths, flags); its tensors follow as broadcasts
from rank 0 in the order of ``Forward.shapes`` / ``DecodeTiles.tiles`` (:class:`gamecraft.parallel.passes.PassRunner`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def dtype_from_name(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"not a torch dtype: {name!r}")
    return dtype


@dataclass(frozen=True)
class TensorMeta:
    """What a receiving rank allocates before a broadcast."""

    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def of(cls, tensor: torch.Tensor) -> TensorMeta:
        return cls(tuple(tensor.shape), dtype_name(tensor.dtype))


@dataclass(frozen=True)
class Forward:
    """One transformer pass. ``shapes`` lists the tensors that follow, in broadcast order: always
    x, t, text_states, text_mask, text_states_2; ``camera_tokens`` and ``rope_cos``/``rope_sin`` only when
    they changed since the last pass (the ranks keep them). ``cache``: the step cache is kept, reset to
    a new one, or not used."""

    variant: str
    go_fast: bool
    backend: str
    text_lengths: tuple[int, ...]
    use_cache: bool
    cache: Literal["keep", "reset", "none"]
    head_chunks: int
    pack_in_graph: bool
    shapes: dict[str, TensorMeta] = field(default_factory=dict)

    @property
    def new_camera(self) -> bool:
        return "camera_tokens" in self.shapes

    @property
    def new_rope(self) -> bool:
        return "rope_cos" in self.shapes


@dataclass(frozen=True)
class DecodeTiles:
    """The VAE tiles of one chunk, spread over the ranks: the latent tiles that follow and the decoded
    tiles' shapes (rank 0 receives every decoded tile)."""

    tiles: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]


@dataclass(frozen=True)
class DisableCompile:
    """Run the transformer blocks and the VAE decoder eagerly from now on (every rank)."""


@dataclass(frozen=True)
class Stop:
    """Leave the worker loop."""


Command = Forward | DecodeTiles | DisableCompile | Stop
