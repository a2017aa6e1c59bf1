"""Multi-GPU code on CPU: gloo process groups with tiny weights must reproduce the one-process run.

Every test starts real worker processes (``ParallelRuntime``) and compares against the same models
run in this process. fp32 on CPU: sequence parallel is bit-exact here (each head's attention is the
same computation); guidance parallel runs each row with batch 1, so rows differ from a batch-2
pass by GEMM rounding only (≤ 1e-5).
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch
from parallel_faults import FaultyEngine

from gamecraft.model import PassInputs, StepCache
from gamecraft.parallel import (
    ParallelEngine,
    ParallelLayout,
    ParallelRuntime,
    WorkerFailure,
    check_world_size,
    choose_layout,
    token_bounds,
)
from gamecraft.parallel.passes import tile_owners
from gamecraft.parallel.ulysses import head_groups
from gamecraft.pipeline.actions import single
from gamecraft.pipeline.camera import chunk_poses
from gamecraft.pipeline.presets import resolve_preset
from gamecraft.pipeline.session import WorldSession
from gamecraft.specs.geometry import LATENT_CHANNELS
from gamecraft.specs.workers import WorkerSpec
from gamecraft.testing.random_weights import TINY_24_HEADS, tiny_random_engine

# 24 heads as the production model, so every degree it allows (1, 2, 3, 4, 6, 8) can be exercised.
CONFIG = TINY_24_HEADS
HEIGHT, WIDTH = 160, 224  # 20×28 latents: VAE tiles (tiny tile 16 latents), 140 tokens per latent frame
SPEC = WorkerSpec("gamecraft.testing.random_weights:tiny_random_engine", dict(transformer_config=CONFIG, text=False))


# -- layouts (pure) ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "world, rows, cfg, sp",
    [(2, 1, 1, 2), (2, 2, 2, 1), (3, 2, 1, 3), (4, 1, 1, 4), (4, 2, 2, 2), (6, 2, 2, 3), (8, 1, 1, 8), (8, 2, 2, 4)],
)
def test_choose_layout(world, rows, cfg, sp):
    layout = choose_layout(world, rows, 24)
    assert (layout.cfg_degree, layout.sp_degree) == (cfg, sp)
    ranks = sorted(r for group in layout.sp_groups() for r in group)
    assert ranks == list(range(world))
    assert sorted(r for group in layout.cfg_groups() for r in group) == list(range(world))
    assert {layout.cfg_index(r) for r in range(world)} == set(range(cfg))


def test_world_sizes_that_cannot_split_the_heads_are_refused():
    for world in (1, 2, 3, 4, 6, 8):
        check_world_size(world, 24)
    for world in (5, 7):
        with pytest.raises(ValueError, match=f"{world} GPUs cannot split 24 attention heads"):
            check_world_size(world, 24)
    with pytest.raises(ValueError, match="invalid layout"):
        ParallelLayout(4, 2, 3)


@pytest.mark.parametrize("total, parts", [(60192, 8), (33440, 8), (33440, 3), (1400, 3), (7, 7), (10, 4)])
def test_token_bounds_cover_every_token_once(total, parts):
    bounds = token_bounds(total, parts)
    assert bounds[0][0] == 0 and bounds[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    sizes = [b - a for a, b in bounds]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    with pytest.raises(ValueError):
        token_bounds(parts - 1, parts)


def test_tile_owners_balance_the_vae_tiles():
    # the 704×1216 tile grid: 32-latent tiles every 24 over 88×152 latents (4 rows × 7 columns)
    heights, widths = [32, 32, 32, 16], [32] * 6 + [8]
    shapes = [(1, 16, 9, h, w) for h in heights for w in widths]
    for world in (1, 2, 3, 4, 8):
        owners = tile_owners(shapes, world)
        load = [sum(h * w for (*_, h, w), o in zip(shapes, owners, strict=False) if o == rank) for rank in range(world)]
        round_robin = [sum(h * w for i, (*_, h, w) in enumerate(shapes) if i % world == rank) for rank in range(world)]
        assert sorted(set(owners)) == list(range(world)) and sum(load) == sum(round_robin)
        assert max(load) <= max(round_robin)
        assert max(load) < sum(load) / world + 32 * 32  # within one largest tile of a perfect split
    # 8 ranks: the 18 full tiles force three onto some rank, so 3 × 1024 is the optimum; round-robin is worse
    owners = tile_owners(shapes, 8)
    assert (
        max(sum(h * w for (*_, h, w), o in zip(shapes, owners, strict=False) if o == r) for r in range(8))
        == 3 * 32 * 32
    )
    assert max(sum(h * w for i, (*_, h, w) in enumerate(shapes) if i % 8 == r) for r in range(8)) > 3 * 32 * 32


def test_head_groups_split_a_ranks_heads():
    assert head_groups(12, 1) == [(0, 12)]
    assert head_groups(12, 5) == [(0, 3), (3, 6), (6, 8), (8, 10), (10, 12)]
    assert head_groups(3, 8) == [(0, 1), (1, 2), (2, 3)]  # never an empty group
    with pytest.raises(ValueError, match="head_chunks must be at least 1"):
        head_groups(6, 0)


# -- runtimes ---------------------------------------------------------------------------------------
def start(world: int, local=None, spec: WorkerSpec = SPEC, timeout_s: float = 120):
    local = local or tiny_random_engine(transformer_config=CONFIG)
    runtime = ParallelRuntime.start(world, spec, CONFIG.num_heads, devices=["cpu"] * world, timeout_s=timeout_s)
    engine = ParallelEngine(local, runtime)
    runtime.wait_ready(timeout_s=300)
    return engine


@pytest.fixture(scope="module")
def local():
    return tiny_random_engine(transformer_config=CONFIG)


def pass_inputs(engine, rows: int, frames: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h, w = HEIGHT // 8, WIDTH // 8
    text = engine.encode_text("a road through the hills", "blurry", guidance=rows == 2)
    x = torch.randn(rows, 2 * LATENT_CHANNELS + 1, frames, h, w, generator=g)
    cam = torch.randn(rows, 33, 6, HEIGHT, WIDTH, generator=g)
    return (
        dict(
            x=x, t=torch.full((rows,), 700.0), text_states=text.states, text_mask=text.mask, text_states_2=text.pooled
        ),
        cam,
        text.lengths,
    )


def compare_passes(parallel, local, rows: int, frames: int, atol: float) -> None:
    """One plain pass, a pass that fills a step cache and a cached pass: parallel vs one process."""
    inputs, cam, lengths = pass_inputs(local, rows, frames)
    tokens = local.transformer("distilled").camera_tokens(cam, frames)
    results = {}
    for name, engine in (("parallel", parallel), ("local", local)):
        model = engine.transformer("distilled")
        cache = StepCache()
        with torch.no_grad():
            plain = model(PassInputs(**inputs, camera_tokens=tokens, text_lengths=lengths))
            model(PassInputs(**inputs, camera_tokens=tokens, text_lengths=lengths, cache=cache))
            cached = model(
                PassInputs(**inputs, camera_tokens=tokens, text_lengths=lengths, cache=cache, use_cache=True)
            )
        results[name] = (plain, cached)
    for got, want in zip(results["parallel"], results["local"], strict=False):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=0, atol=atol)


def session_chunks(engine, preset_name: str, steps: int, actions: tuple[str, ...]) -> list:
    history = torch.randn(1, LATENT_CHANNELS, 1, HEIGHT // 8, WIDTH // 8, generator=torch.Generator().manual_seed(1))
    session = WorldSession.start(
        engine, resolve_preset(preset_name, steps), "a road", 11, HEIGHT, WIDTH, history=history
    )
    session.frames_dtype = torch.float32  # compared at float tolerance (uint8 could flip at a rounding edge)
    return [session.generate_chunk(chunk_poses(single(action, 0.4)), action) for action in actions]


def test_two_ranks_reproduce_one_process(local):
    parallel = start(2, local)
    try:
        compare_passes(parallel, local, rows=1, frames=18, atol=0)  # sequence parallel, 2 shards: exact
        for chunks in (1, 5, 12):  # overlapped exchanges in 1, 5 uneven, or 12 single-head groups: exact too
            parallel.head_chunks = chunks
            compare_passes(parallel, local, rows=1, frames=10, atol=0)
        parallel.head_chunks = 2
        compare_passes(parallel, local, rows=2, frames=10, atol=1e-5)  # guidance parallel
        for preset, steps, actions, atol in (("distilled", 2, ("w", "left_rot"), 0), ("full", 2, ("d",), 1e-5)):
            want = session_chunks(local, preset, steps, actions)
            got = session_chunks(parallel, preset, steps, actions)  # VAE tiles over both ranks too
            for a, b in zip(got, want, strict=False):
                torch.testing.assert_close(a.latents, b.latents, rtol=0, atol=atol)
                torch.testing.assert_close(a.frames, b.frames, rtol=0, atol=max(atol, 1e-6))
        assert parallel.healthy
    finally:
        parallel.close()
    assert not parallel.healthy


def test_sequence_parallel_with_sage_equals_one_process(local):
    """Backend "sage" (on CPU its emulation): quantization groups, K means and V scales are per head over all
    tokens, and each rank holds all tokens of its heads, so the head shards reproduce one process."""
    inputs, cam, lengths = pass_inputs(local, rows=1, frames=10)
    tokens = local.transformer("distilled").camera_tokens(cam, 10)
    kw = dict(camera_tokens=tokens, text_lengths=lengths)
    parallel = start(2, local)
    try:
        with torch.no_grad():
            got = parallel.transformer("distilled")(PassInputs(**inputs, **kw, attention_backend="sage"))
            want = local.transformer("distilled")(PassInputs(**inputs, **kw, attention_backend="sage"))
            exact = local.transformer("distilled")(PassInputs(**inputs, **kw, attention_backend="sdpa"))
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        assert (want - exact).norm() > 1e-4 * exact.norm()  # the quantized numerics really ran
    finally:
        parallel.close()


def test_three_ranks_uneven_token_shards(local):
    parallel = start(3, local)
    try:
        compare_passes(parallel, local, rows=1, frames=10, atol=0)  # 1400 tokens over 3 ranks: 467/467/466
        compare_passes(parallel, local, rows=2, frames=18, atol=1e-5)  # 3 ranks: both rows on 3 shards
    finally:
        parallel.close()


@pytest.mark.parametrize("world", [4, 8])
def test_four_and_eight_ranks(local, world):
    """4 ranks: guidance 2 × sequence 2; 8 ranks (issue 9's split, exercised on CPU): sequence 8, and
    guidance 2 × sequence 4."""
    parallel = start(world, local)
    try:
        compare_passes(parallel, local, rows=1, frames=18, atol=0)
        compare_passes(parallel, local, rows=2, frames=18, atol=1e-5)
    finally:
        parallel.close()


class Interrupted(BaseException):
    """Stands in for coglet's CancelationException (a BaseException raised in the main thread)."""


def test_cancelled_call_keeps_the_ranks_in_step(local):
    parallel = start(2, local)
    try:
        inputs, cam, lengths = pass_inputs(local, 1, 18, seed=5)
        model = parallel.transformer("distilled")
        tokens = model.camera_tokens(cam, 18)

        def interrupt(signum, frame):
            raise Interrupted()

        previous = signal.signal(signal.SIGALRM, interrupt)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.01)
            with pytest.raises(Interrupted):
                for _ in range(200):  # interrupted somewhere inside one of these passes
                    model(PassInputs(**inputs, camera_tokens=tokens, text_lengths=lengths))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        compare_passes(parallel, local, rows=1, frames=18, atol=0)
        assert parallel.healthy
    finally:
        parallel.close()


def test_dead_worker_fails_the_call_and_marks_unhealthy(local):
    parallel = start(2, local)
    try:
        inputs, cam, lengths = pass_inputs(local, 1, 10)
        model = parallel.transformer("distilled")
        tokens = model.camera_tokens(cam, 10)
        model(PassInputs(**inputs, camera_tokens=tokens, text_lengths=lengths))
        worker = parallel.runtime._processes[0]
        os.kill(worker.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while parallel.healthy and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not parallel.healthy
        started = time.monotonic()
        with pytest.raises(WorkerFailure, match=r"GPU worker 1 exited with code -9.*must be restarted"):
            model(PassInputs(**inputs, camera_tokens=tokens, text_lengths=lengths))
        assert time.monotonic() - started < 5
    finally:
        parallel.close()


FAULT_T = 321.0  # the timestep of the pass that faults (parallel_faults)


def wait_for(condition, timeout_s: float) -> bool:
    """Poll ``condition`` until it holds or ``timeout_s`` passed (a bound, not a synchronisation)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("where", ["rank 0", "worker"])
def test_a_fault_in_one_ranks_share_fails_the_runtime_and_the_next_call_at_once(local, where):
    """A pass that raises on rank 0 (out of memory on GPU 0) or on a worker leaves the other ranks inside the
    pass's collectives: the runtime is marked failed, the workers are stopped, and the next call fails within
    seconds saying the model must be restarted (before: rank 0's fault left ``healthy`` true and the next
    call blocked in a collective until the timeout)."""
    if where == "rank 0":
        engine = start(2, FaultyEngine(local, FAULT_T, error="oom"), timeout_s=60)
        cause = r"rank 0 failed in Forward: OutOfMemoryError: injected fault"
    else:
        spec = WorkerSpec("parallel_faults:faulty_tiny_engine", dict(SPEC.kwargs, fault_t=FAULT_T))
        engine = start(2, local, spec=spec, timeout_s=60)
        cause = r"GPU worker 1 (failed|exited).*InjectedFault: injected fault"
    try:
        inputs, cam, lengths = pass_inputs(local, 1, 10)
        model = engine.transformer("distilled")
        tokens = model.camera_tokens(cam, 10)
        with torch.no_grad():
            model(PassInputs(**inputs, camera_tokens=tokens, text_lengths=lengths))  # a pass that works
            faulty = dict(inputs, t=torch.full((1,), FAULT_T))
            with pytest.raises(WorkerFailure, match=cause + r".*the model must be restarted"):
                model(PassInputs(**faulty, camera_tokens=tokens, text_lengths=lengths))
            assert not engine.healthy
            worker = engine.runtime._processes[0]
            assert wait_for(lambda: not worker.is_alive(), timeout_s=30), "the worker was left running"
            started = time.monotonic()
            with pytest.raises(WorkerFailure, match=cause + r".*the model must be restarted"):
                model(PassInputs(**inputs, camera_tokens=tokens, text_lengths=lengths))
            assert time.monotonic() - started < 5  # failed at once, not after the collective timeout
    finally:
        engine.close()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs (NCCL)")
@pytest.mark.parametrize("where", ["rank 0", "worker"])
def test_a_fault_in_one_ranks_share_fails_an_nccl_runtime_at_once(where):
    """The same on GPUs: NCCL collectives do not raise when a peer leaves, so this is where the abort and the
    stopped workers matter (run on 2 GPUs: ``pytest -q tests/test_parallel.py -k nccl``)."""
    local = tiny_random_engine(device="cuda:0", transformer_config=CONFIG)
    spec = WorkerSpec("parallel_faults:faulty_tiny_engine", dict(SPEC.kwargs, fault_t=FAULT_T))
    if where == "rank 0":
        local, spec = FaultyEngine(local, FAULT_T, error="oom"), SPEC
    runtime = ParallelRuntime.start(2, spec, CONFIG.num_heads, devices=["cuda:0", "cuda:1"], timeout_s=60)
    engine = ParallelEngine(local, runtime)
    try:
        runtime.wait_ready(timeout_s=300)
        inputs, cam, lengths = pass_inputs(local, 1, 10)
        inputs = {name: value.to("cuda:0") for name, value in inputs.items()}
        model = engine.transformer("distilled")
        tokens = model.camera_tokens(cam.to("cuda:0"), 10)
        with torch.no_grad():
            model(PassInputs(**inputs, camera_tokens=tokens, text_lengths=lengths))
            faulty = dict(inputs, t=torch.full((1,), FAULT_T, device="cuda:0"))
            with pytest.raises(WorkerFailure, match=r"the model must be restarted"):
                model(PassInputs(**faulty, camera_tokens=tokens, text_lengths=lengths))
            assert not engine.healthy
            assert wait_for(lambda: not runtime._processes[0].is_alive(), timeout_s=30)
            started = time.monotonic()
            with pytest.raises(WorkerFailure, match=r"the model must be restarted"):
                model(PassInputs(**inputs, camera_tokens=tokens, text_lengths=lengths))
            assert time.monotonic() - started < 5
    finally:
        engine.close()


def test_worker_that_fails_to_load_fails_setup(local):
    bad = WorkerSpec(
        "gamecraft.testing.random_weights:tiny_random_engine",
        dict(transformer_config=CONFIG, text=False, device_typo=True),
    )
    runtime = ParallelRuntime.start(2, bad, CONFIG.num_heads, devices=["cpu"] * 2, timeout_s=60)
    try:
        with pytest.raises(
            WorkerFailure, match=r"GPU worker 1 .*TypeError: .*unexpected keyword argument 'device_typo'"
        ):
            runtime.wait_ready(timeout_s=120)
        assert not runtime.healthy
    finally:
        runtime.close()
