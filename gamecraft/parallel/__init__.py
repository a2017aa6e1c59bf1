"""Several GPUs in one predictor: persistent worker ranks, guidance- and sequence-parallel passes.

* :mod:`.layout` — how a pass is split (pure functions);
* :mod:`.ulysses` — the all-to-all around attention;
* :mod:`.passes` — what every rank runs per command;
* :mod:`.runtime` — the worker processes, the process group, failure handling;
* :mod:`.engine` — rank 0's engine facade used by sessions and the predictor.
"""

from .engine import (DistributedTransformer, ParallelEngine, load_parallel_engine, start_parallel_engine,
                     start_workers_early)
from .layout import ParallelLayout, check_world_size, choose_layout, token_bounds
from .runtime import ParallelRuntime, WorkerFailure, WorkerSpec

__all__ = ["DistributedTransformer", "ParallelEngine", "ParallelLayout", "ParallelRuntime", "WorkerFailure",
           "WorkerSpec", "check_world_size", "choose_layout", "load_parallel_engine", "start_parallel_engine",
           "start_workers_early", "token_bounds"]
