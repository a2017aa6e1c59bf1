"""Worker ranks that load while rank 0 loads (``setup()``'s order when the weights need no conversion):
only when every load just reads, refused commands until ready, the same outputs as one process."""

from __future__ import annotations

import pytest
import torch
from test_parallel import session_chunks

from gamecraft.engine import EngineConfig, GameCraftEngine
from gamecraft.parallel import engine_worker_spec, start_parallel_engine, start_workers_early
from gamecraft.parallel.commands import DisableCompile
from gamecraft.testing.tiny_weights import write_tiny_weights


def test_workers_start_before_rank0_loads_and_reproduce_one_process(tmp_path):
    weights = tmp_path / "weights"
    write_tiny_weights(weights)
    config = EngineConfig.for_cpu(weights, preload=("distilled",))
    devices = ["cpu", "cpu"]
    assert start_workers_early(config, 1, devices[:1]) is None  # one rank: nothing to start
    # No safetensors cache yet: every rank would convert the .pt into the same file, so not early.
    assert not GameCraftEngine.loads_without_writing(config)
    assert start_workers_early(config, 2, devices) is None
    reference = GameCraftEngine.load(config)  # writes the cache
    want = session_chunks(reference, "distilled", 2, ("w",))
    assert GameCraftEngine.loads_without_writing(config)

    workers = start_workers_early(config, 2, devices)  # returns at once; the worker loads meanwhile
    assert workers is not None
    try:
        with pytest.raises(RuntimeError, match="wait_ready"):
            workers.command(DisableCompile())
        local = GameCraftEngine.load(config)  # rank 0's own load, while the worker's runs
        parallel = start_parallel_engine(local, engine_worker_spec(local.config), 2, devices, runtime=workers)
        assert parallel.healthy
        got = session_chunks(parallel, "distilled", 2, ("w",))
        torch.testing.assert_close(got[0].latents, want[0].latents, rtol=0, atol=1e-5)
        torch.testing.assert_close(got[0].frames, want[0].frames, rtol=0, atol=1e-5)
    finally:
        workers.close()
    assert not workers.healthy


def test_a_runtime_of_another_size_is_refused_and_stopped_cleanly(tmp_path):
    weights = tmp_path / "weights"
    write_tiny_weights(weights)
    config = EngineConfig.for_cpu(weights, preload=("distilled",))
    local = GameCraftEngine.load(config)
    workers = start_workers_early(config, 2, ["cpu", "cpu"])
    with pytest.raises(ValueError, match="2 ranks, not 3"):  # closed at once, before its group was joined
        start_parallel_engine(local, engine_worker_spec(local.config), 3, ["cpu"] * 3, runtime=workers)
    assert not workers.healthy
    # Nothing of it is left waiting in this process: a new runtime starts and works.
    parallel = start_parallel_engine(
        local,
        engine_worker_spec(local.config),
        2,
        ["cpu", "cpu"],
        runtime=start_workers_early(config, 2, ["cpu", "cpu"]),
    )
    try:
        assert parallel.healthy and session_chunks(parallel, "distilled", 1, ("d",))[0].frames.shape[0] == 33
    finally:
        parallel.close()
