"""Chunks generated one ahead on a thread: order, errors, stopping, and the same outputs as in line."""

from __future__ import annotations

import threading
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from gamecraft.engine import base as engine_base
from gamecraft.pipeline.actions import parse_actions
from gamecraft.pipeline.presets import resolve_preset
from gamecraft.pipeline.sampling import GenerationStopped
from gamecraft.pipeline.state import load_state
from gamecraft.serving import budget
from gamecraft.serving.chunks_ahead import chunks_ahead
from gamecraft.serving.events import FileReady
from gamecraft.serving.generate import GenerationRequest, generate
from gamecraft.testing.random_weights import tiny_random_engine

SIZE = (32, 48)
IMAGE = Path(__file__).resolve().parents[1] / "assets" / "start.png"
STEPS = 4


class FakeSession:
    """Stands in for a WorldSession: each chunk runs STEPS steps through ``on_step``; a step of chunk
    ``block_at`` waits until the test releases it, so the thread's position is known."""

    def __init__(self, fail_at: int | None = None, block_at: int | None = None):
        self.engine = SimpleNamespace(device=torch.device("cpu"))
        self.state = SimpleNamespace(chunks_done=0)
        self.fail_at, self.block_at = fail_at, block_at
        self.started, self.steps_run = [], 0
        self.blocked, self.release = threading.Event(), threading.Event()
        self.threads: set[str] = set()

    def generate_chunk(self, poses, label, on_step=None, stop=None):
        index = self.state.chunks_done
        self.started.append(index)
        self.threads.add(threading.current_thread().name)
        if index == self.fail_at:
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        for step in range(STEPS):
            if index == self.block_at and step == 1:
                self.blocked.set()
                self.release.wait(10)
            if stop is not None and stop.is_set():  # as denoise_chunk: the stop signal, checked between steps
                raise GenerationStopped
            if on_step is not None:
                on_step(SimpleNamespace(index=step, total=STEPS, timestep=1.0, cached=False))
            self.steps_run += 1
        self.state.chunks_done += 1
        return SimpleNamespace(index=index, label=label)


CHUNKS = [(None, f"chunk {i}") for i in range(5)]


def test_results_come_in_order_from_one_background_thread():
    session = FakeSession()
    assert [r.index for r in chunks_ahead(session, CHUNKS)] == [0, 1, 2, 3, 4]
    assert session.threads == {"gamecraft-chunks"} and session.steps_run == 5 * STEPS


def test_an_error_in_the_thread_is_raised_in_the_consumer_with_its_type():
    session = FakeSession(fail_at=2)
    seen = []
    with pytest.raises(torch.OutOfMemoryError, match="fake"):
        for result in chunks_ahead(session, CHUNKS):
            seen.append(result.index)
    assert seen == [0, 1] and session.started == [0, 1, 2]


def test_closing_stops_the_chunk_in_progress_at_its_next_step_and_joins_the_thread():
    session = FakeSession(block_at=2)
    results = chunks_ahead(session, CHUNKS)
    with closing(results):
        assert next(results).index == 0
        assert session.blocked.wait(10)  # chunk 1 is finished and queued; chunk 2 waits inside step 1
        threading.Timer(0.3, session.release.set).start()
    # close() returned only after the thread ended: chunk 2 stopped at its next step, nothing else started
    assert not any(t.name == "gamecraft-chunks" for t in threading.enumerate())
    assert session.started == [0, 1, 2] and session.state.chunks_done == 2
    assert session.steps_run == 2 * STEPS + 1


def test_a_cancellation_in_the_consumer_stops_the_thread():
    session = FakeSession(block_at=1)

    def consume():
        for _result in chunks_ahead(session, CHUNKS):
            session.blocked.wait(10)
            threading.Timer(0.3, session.release.set).start()
            raise KeyboardInterrupt  # stands in for coglet's CancelationException (a BaseException)

    with pytest.raises(KeyboardInterrupt):
        consume()
    assert not any(t.name == "gamecraft-chunks" for t in threading.enumerate())
    assert session.started == [0, 1] and session.state.chunks_done == 1


@pytest.fixture(scope="module")
def engine():
    return tiny_random_engine()


def _request(actions: str = '["w", "left_rot", "d"]', speeds: str = "[0.3, 20, 0.2]") -> GenerationRequest:
    """A tiny 2-step distilled request from the start image, one chunk per action."""
    return GenerationRequest(
        prompt="a village",
        preset=resolve_preset("distilled", 2),
        segments=parse_actions(actions, speeds),
        size=SIZE,
        image=IMAGE,
        seed=3,
    )


def _generate(engine, out: Path, overlap: bool):
    events = list(generate(engine, _request(), out, overlap_writes=overlap))
    return [e for e in events if isinstance(e, FileReady)], events[-1]


def test_overlapped_writes_give_the_same_outputs_as_in_line(engine, tmp_path):
    ahead, report = _generate(engine, tmp_path / "ahead", overlap=True)
    inline, _ = _generate(engine, tmp_path / "inline", overlap=False)
    assert [o.kind for o in ahead] == [o.kind for o in inline] == ["chunk"] * 3 + ["video", "state"]
    assert [o.world_chunk for o in ahead[:3]] == [1, 2, 3] and len(report.chunk_seconds) == 3
    a, b = (load_state(next(o.path for o in outs if o.kind == "state")) for outs in (ahead, inline))
    assert torch.equal(a.last_latents, b.last_latents) and a.actions == b.actions
    for x, y in zip(ahead[:4], inline[:4], strict=False):  # same frames in ⇒ the same H.264 bytes out
        assert x.path.read_bytes() == y.path.read_bytes()


def test_a_write_error_stops_the_thread_and_leaves_no_partial_video(engine, tmp_path, monkeypatch):
    from gamecraft.serving import generate as generate_module

    def failing_write(frames, path, fps):
        raise OSError("disk full (fake)")

    monkeypatch.setattr(generate_module, "write_mp4", failing_write)
    with pytest.raises(OSError, match="disk full"):
        _generate(engine, tmp_path, overlap=True)
    assert not any(t.name == "gamecraft-chunks" for t in threading.enumerate())
    assert list(tmp_path.iterdir()) == []


def test_setup_decode_cost_leaves_out_the_first_call(engine, monkeypatch):
    """The first decode compiles the decoder (compile_vae): the budget must not count that as a cost."""
    clock = [0.0]
    monkeypatch.setattr(engine_base.time, "perf_counter", lambda: clock[0])
    decode, calls = engine.vae.decode, []

    def slow_first(z):
        calls.append(1)
        clock[0] += 30.0 if len(calls) == 1 else 2.0
        return decode(z)

    monkeypatch.setattr(engine.vae, "decode", slow_first)
    costs = budget.measure_costs(engine, *SIZE)
    assert len(calls) == 2 and costs.decode_s == pytest.approx(2.0 * 1.2 + 0.5)


def test_the_thread_uses_the_engine_gpu_or_the_callers_current_one():
    from gamecraft.serving.chunks_ahead import thread_cuda_index

    assert thread_cuda_index(torch.device("cuda:2"), 0) == 2
    assert thread_cuda_index(torch.device("cuda"), 1) == 1  # predict's engine says just "cuda"
    assert thread_cuda_index(torch.device("cpu"), None) is None


def test_the_first_estimate_counts_every_steps_and_decodes_cost(engine, tmp_path):
    """Before any step is timed, the ETA comes from the warm-up's cost table: steps × pass + chunks × decode."""
    from gamecraft.serving.budget import PassCosts
    from gamecraft.serving.events import Started

    costs = PassCosts(first_pass_s=1.0, later_pass_s=1.0, decode_s=10.0, overhead_s=0.0)
    with closing(generate(engine, _request('["w", "a", "d"]', "[0.3, 0.3, 0.3]"), tmp_path, costs=costs)) as events:
        estimate = next(e for e in events if isinstance(e, Started)).estimate_s
    assert estimate == 3 * 2 * 1.0 + 3 * 10.0


def test_each_chunks_file_comes_before_its_copy_in_the_whole_video(engine, tmp_path, monkeypatch):
    """The whole video's H.264 encode of a chunk runs after the chunk's own file is handed out, so the time
    to each chunk's file holds one encode, not two."""
    from gamecraft.serving import generate as generate_module

    order = []
    append = generate_module.VideoWriter.append

    def recording(writer, frames):  # every H.264 encode goes through VideoWriter.append
        order.append("encode video" if writer.path.name.endswith("-video.mp4") else "encode chunk")
        append(writer, frames)

    monkeypatch.setattr(generate_module.VideoWriter, "append", recording)
    for event in generate(engine, _request('["w", "a"]', "[0.3, 0.3]"), tmp_path):
        if isinstance(event, FileReady):
            order.append(f"ready {event.kind}")
    chunk = ["encode chunk", "ready chunk", "encode video"]
    assert order == chunk + chunk + ["ready video", "ready state"]
