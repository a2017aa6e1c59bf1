"""Fault injection for the multi-GPU tests: an engine whose transformer raises in one pass.

A :class:`FaultyEngine` wraps a tiny engine and raises ``error`` from the transformer call whose timestep
is ``fault_t`` (every rank receives the same ``t`` by broadcast, so the test picks the faulty pass by its
inputs, on rank 0 or on a worker: :func:`faulty_tiny_engine` is a ``WorkerSpec`` factory).
"""

from __future__ import annotations

import torch

from gamecraft.testing.random_weights import tiny_random_engine


class InjectedFault(RuntimeError):
    """The error a worker's faulty pass raises."""


ERRORS = {"oom": torch.OutOfMemoryError, "fault": InjectedFault}


class _FaultyTransformer:
    def __init__(self, model, fault_t: float, error: type[BaseException]):
        self._model, self._fault_t, self._error = model, fault_t, error

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __call__(self, inputs, **kwargs):
        if float(inputs.t.reshape(-1)[0]) == self._fault_t:
            raise self._error(f"injected fault in the pass at t={self._fault_t:g}")
        return self._model(inputs, **kwargs)


class FaultyEngine:
    """``engine`` whose transformers raise ``ERRORS[error]`` in a pass at timestep ``fault_t``."""

    def __init__(self, engine, fault_t: float, error: str = "fault"):
        self._engine, self._fault_t, self._error = engine, fault_t, ERRORS[error]

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def transformer(self, variant: str, go_fast: bool = False):
        return _FaultyTransformer(self._engine.transformer(variant, go_fast=go_fast), self._fault_t, self._error)


def faulty_tiny_engine(device: str, fault_t: float, error: str = "fault", **kwargs) -> FaultyEngine:
    return FaultyEngine(tiny_random_engine(device=device, **kwargs), fault_t, error)
