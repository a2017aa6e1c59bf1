"""How a multi-GPU worker process builds its engine: a picklable factory path plus arguments."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class WorkerSpec:
    """``factory(device=..., **kwargs)`` → an engine (``gamecraft.engine.Engine``) for one worker rank.

    ``factory`` is a ``"module:function"`` (or ``"module:Class.method"``) path so the spec crosses the
    spawn boundary of the worker processes.
    """

    factory: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self, device: str):
        module, _, path = self.factory.partition(":")
        target = importlib.import_module(module)
        for name in path.split("."):
            target = getattr(target, name)
        return target(device=device, **self.kwargs)
