"""Several GPUs in one predictor: persistent worker ranks, guidance- and sequence-parallel passes.

* :mod:`.layout` — how a pass is split (pure functions);
* :mod:`.ulysses` — the all-to-all around attention;
* :mod:`.passes` — what every rank runs per command;
* :mod:`.runtime` — the worker processes, the process group, failure handling;
* :mod:`.commands` — the commands rank 0 sends (small dataclasses);
* :mod:`.engine` — :class:`ParallelEngine`, rank 0's :class:`gamecraft.engine.Engine` over every GPU.
"""

from .engine import (
    DistributedTransformer,
    ParallelEngine,
    engine_worker_spec,
    load_parallel_engine,
    start_parallel_engine,
    start_workers_early,
)
from .layout import ParallelLayout, check_world_size, choose_layout, token_bounds
from .runtime import ParallelRuntime, WorkerFailure

__all__ = [
    "DistributedTransformer",
    "ParallelEngine",
    "ParallelLayout",
    "ParallelRuntime",
    "WorkerFailure",
    "check_world_size",
    "engine_worker_spec",
    "choose_layout",
    "load_parallel_engine",
    "start_parallel_engine",
    "start_workers_early",
    "token_bounds",
]
