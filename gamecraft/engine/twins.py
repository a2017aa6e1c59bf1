"""go_fast's fp8 twin of a transformer, and where the two copies of the block linears live.

The twin (:func:`gamecraft.model.fp8.fp8_copy`) shares every parameter with the exact model except the
selected block linears, which it holds in e4m3 (8.7 GiB for the production model, against 17.3 GiB of bf16
weights they stand for). Two placements (``EngineConfig.fp8_twin``, from the GPU's memory plan):

* ``"beside"``: both stay on the GPU (80 GB cards and larger): switching costs nothing;
* ``"replace"``: at most one of the two is on the GPU (a 48 GB L40S): the inactive one waits in pinned host
  memory and comes back in one copy (≈ 0.3–0.7 s) when a request asks for the other.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from gamecraft.model.fp8 import FP8Linear, fp8_copy, is_fp8_layer
from gamecraft.weights.offload import PinnedTensors

PLACEMENTS = ("beside", "replace")


class Fp8Twin:
    """The fp8 twin of ``model`` (made from its weights, on their device) and the placement of both."""

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        placement: str = "beside",
        prepare: Callable[[nn.Module], None] | None = None,
    ):
        if placement not in PLACEMENTS:
            raise ValueError(f"fp8 twin placement must be one of {PLACEMENTS}, got {placement!r}")
        self.model = model
        self.twin = fp8_copy(model)
        if prepare is not None:
            prepare(self.twin)  # e.g. compile its blocks
        self.placement = placement
        self.device = torch.device(device)
        self._exact: PinnedTensors | None = None  # the bf16 weights the twin stands for ("replace")
        self._go_fast: PinnedTensors | None = None  # the twin's fp8 weights ("replace")

    def _exact_weights(self) -> list[torch.Tensor]:
        # biases are shared with the twin's FP8Linear: they stay where they are
        return [m.weight for name, m in self.model.named_modules() if is_fp8_layer(name, m)]

    def _go_fast_weights(self) -> list[torch.Tensor]:
        return [t for m in self.twin.modules() if isinstance(m, FP8Linear) for t in (m.weight_fp8, m.weight_scale)]

    def use(self, go_fast: bool) -> nn.Module:
        """The module to run (the twin when ``go_fast``), with its weights on the device."""
        if self.placement == "beside":
            return self.twin if go_fast else self.model
        if go_fast:
            if self._go_fast is not None:
                self._go_fast.to_device()
            if self._exact is None:
                self._exact = PinnedTensors(self._exact_weights(), self.device)  # parks them (first time)
            else:
                self._exact.to_host()
            return self.twin
        if self._go_fast is None:
            self._go_fast = PinnedTensors(self._go_fast_weights(), self.device)
        else:
            self._go_fast.to_host()
        if self._exact is not None:
            self._exact.to_device()
        return self.model

    def release(self) -> nn.Module:
        """Give up the twin: the exact model's weights back on the device; returns the model."""
        return self.use(False)
