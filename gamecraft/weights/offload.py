"""Keep a module's weights in pinned host memory and put them on the GPU only while it runs.

The text encoders (LLaVA-Llama-3-8B's language model: 16 GB in fp16) run once per prediction; the
transformer needs the GPU memory the rest of the time. Moving the module with ``.to()`` copies from
pageable memory (≈ 1 GB/s measured: 13 s per prompt) and re-allocates host memory on the way back.
Here the host copy is pinned once and kept, so going on the GPU is one fast asynchronous copy per
tensor and coming back is free (the GPU copies are just dropped).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch


class PinnedTensors:
    """Some tensors' data in pinned host memory, put on ``device`` on demand. Made with the tensors on the
    host: the constructor copies each to (pinned) host memory and points the tensor there."""

    def __init__(self, tensors: Iterable[torch.Tensor], device: torch.device):
        self.device = torch.device(device)
        self._tensors: list[tuple[torch.Tensor, torch.Tensor]] = []  # (tensor, pinned host copy)
        self._on_device = False
        seen: set[int] = set()
        for tensor in tensors:
            if id(tensor) in seen:  # tied weights appear once
                continue
            seen.add(id(tensor))
            host = tensor.data.to("cpu")
            if self.device.type == "cuda":
                host = host.pin_memory()
            tensor.data = host
            self._tensors.append((tensor, host))

    @property
    def resident(self) -> bool:
        """Whether the tensors point at device copies (False: at the host copies)."""
        return self._on_device

    @property
    def on_gpu(self) -> bool:
        return self._on_device and self.device.type != "cpu"

    @property
    def nbytes(self) -> int:
        return sum(host.numel() * host.element_size() for _, host in self._tensors)

    def to_device(self) -> None:
        """Copy the data to the device (asynchronously, from pinned memory)."""
        if not self._on_device:
            for tensor, host in self._tensors:
                # a copy even on the CPU, so that the host copy stays untouched while the tensor is in use
                tensor.data = host.to(self.device, non_blocking=True, copy=True)
            self._on_device = True

    def to_host(self) -> None:
        """Point the tensors back at their host copies and drop the device copies.

        The caching allocator is stream-ordered, so dropping the device copies is safe even while
        queued kernels still read them.
        """
        for tensor, host in self._tensors:
            tensor.data = host
        self._on_device = False


class PinnedOffload(PinnedTensors):
    """``with offload.on_device(): module(...)`` — weights on ``device`` inside, in pinned host memory outside."""

    def __init__(self, module: torch.nn.Module, device: torch.device):
        super().__init__([*module.parameters(), *module.buffers()], device)
        self.module = module

    def to_device(self) -> torch.nn.Module:
        super().to_device()
        return self.module

    @contextmanager
    def on_device(self) -> Iterator[torch.nn.Module]:
        self.to_device()
        try:
            yield self.module
        finally:
            self.to_host()
