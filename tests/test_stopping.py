"""Stopping a generation, one explicit path: an external ``stop`` ends ``generate()`` with
``GenerationStopped`` on both the overlapped and the in-line path; a chunk thread that does not stop marks
the engine failed after a bounded wait; one engine runs one generation at a time."""

from __future__ import annotations

import os
import signal
import threading
from contextlib import closing
from pathlib import Path

import pytest

from gamecraft.engine import EngineBusy, EngineFailed
from gamecraft.pipeline.actions import parse_actions
from gamecraft.pipeline.presets import resolve_preset
from gamecraft.serving import chunks_ahead as chunks_ahead_module
from gamecraft.serving.events import ChunkDone, FileReady, Finished, Started, StepDone
from gamecraft.serving.generate import GenerationRequest, GenerationStopped, generate
from gamecraft.testing.random_weights import tiny_random_engine

SIZE = (32, 48)
IMAGE = Path(__file__).resolve().parents[1] / "assets" / "start.png"


@pytest.fixture(scope="module")
def engine():
    return tiny_random_engine()


def request(seed: int = 3) -> GenerationRequest:
    """Three chunks of a 2-step distilled preset from the start image."""
    return GenerationRequest(
        prompt="a village",
        preset=resolve_preset("distilled", 2),
        segments=parse_actions('["w", "left_rot", "d"]', "[0.3, 20, 0.2]"),
        size=SIZE,
        image=IMAGE,
        seed=seed,
    )


def no_chunk_thread() -> bool:
    return not any(t.name == "gamecraft-chunks" for t in threading.enumerate())


def stop_at_first_step(engine, out: Path, overlap: bool, stop: threading.Event) -> list:
    """Run a request, setting ``stop`` (as another thread would) once its first step is reported; the
    events seen before ``generate`` raised."""
    seen = []
    with pytest.raises(GenerationStopped, match=r"stopped after 0 of 3 chunk\(s\)"):
        for event in generate(engine, request(), out, overlap_writes=overlap, stop=stop):
            seen.append(event)
            if isinstance(event, StepDone):
                stop.set()
    return seen


@pytest.mark.parametrize("overlap", [True, False], ids=["overlap_writes", "in_line"])
def test_a_stop_between_steps_ends_generate_the_same_way_on_both_paths(engine, tmp_path, overlap):
    """Before: with overlap_writes the consumer raised "the chunk thread ended without a result"."""
    seen = stop_at_first_step(engine, tmp_path, overlap, threading.Event())
    assert [type(e) for e in seen] == [Started, StepDone]  # nothing after the event that set the stop
    assert no_chunk_thread()
    assert list(tmp_path.iterdir()) == []  # no chunk was written, no partial whole video is left
    assert engine.healthy


@pytest.mark.parametrize("overlap", [True, False], ids=["overlap_writes", "in_line"])
def test_a_stop_set_during_a_step_ends_generate_the_same_way_on_both_paths(tmp_path, monkeypatch, overlap):
    """The stop comes from another thread while the first pass runs: the sampler notices it before step 2,
    and generate() ends exactly as when it noticed it itself (same exception, same message)."""
    engine = tiny_random_engine()
    model = engine.transformer("distilled")
    stop, forward = threading.Event(), type(model).forward

    def stopping_forward(self, *args, **kwargs):
        stop.set()  # as a caller's thread would, mid-step
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "forward", stopping_forward)
    seen = []
    with pytest.raises(GenerationStopped, match=r"^stopped after 0 of 3 chunk\(s\)$"):
        for event in generate(engine, request(), tmp_path, overlap_writes=overlap, stop=stop):
            seen.append(event)
    assert [type(e) for e in seen] == [Started]
    assert no_chunk_thread() and list(tmp_path.iterdir()) == [] and engine.healthy


def test_stopping_twice_leaves_the_engine_usable_and_its_results_unchanged(engine, tmp_path):
    stop = threading.Event()
    stop_at_first_step(engine, tmp_path / "one", True, stop)
    stop.set()  # setting it again changes nothing
    stop_at_first_step(engine, tmp_path / "two", False, threading.Event())
    after = list(generate(engine, request(), tmp_path / "after"))
    fresh = list(generate(tiny_random_engine(), request(), tmp_path / "fresh"))
    assert isinstance(after[-1], Finished) and after[-1].world_chunks == 3
    files = [(e.kind, e.path.read_bytes()) for e in after if isinstance(e, FileReady) and e.kind == "chunk"]
    want = [(e.kind, e.path.read_bytes()) for e in fresh if isinstance(e, FileReady) and e.kind == "chunk"]
    assert len(files) == 3 and files == want  # same frames as an engine that never stopped


def test_a_second_generation_on_a_busy_engine_is_refused(engine, tmp_path):
    first = generate(engine, request(), tmp_path / "first")
    with closing(first):
        assert isinstance(next(first), Started)
        second = generate(engine, request(), tmp_path / "second")
        with pytest.raises(EngineBusy, match="already running a generation; it runs one request at a time"):
            next(second)
        assert next(e for e in first if isinstance(e, ChunkDone)).chunk == 1  # the first one goes on
    assert no_chunk_thread()
    assert isinstance(list(generate(engine, request(), tmp_path / "third"))[-1], Finished)  # free again


class Cancelled(BaseException):
    """Stands in for coglet's CancelationException (a BaseException raised in the main thread)."""


def test_a_chunk_thread_that_does_not_stop_marks_the_engine_failed(tmp_path, monkeypatch):
    engine = tiny_random_engine()
    model = engine.transformer("distilled")
    entered, release = threading.Event(), threading.Event()
    forward = type(model).forward

    def stuck(self, *args, **kwargs):  # a pass that does not return (a hung kernel or collective)
        entered.set()
        release.wait(60)
        return forward(self, *args, **kwargs)

    def cancel(signum, frame):
        raise Cancelled()

    def cancel_once_stuck():
        if entered.wait(60):
            os.kill(os.getpid(), signal.SIGUSR1)  # what coglet does to cancel a prediction

    monkeypatch.setattr(type(model), "forward", stuck)
    monkeypatch.setattr(chunks_ahead_module, "JOIN_TIMEOUT_S", 0.5)
    previous = signal.signal(signal.SIGUSR1, cancel)
    try:
        threading.Thread(target=cancel_once_stuck, daemon=True).start()
        with pytest.raises(Cancelled):  # raised in the consumer while the thread is inside the pass
            list(generate(engine, request(), tmp_path))
        assert entered.is_set() and not engine.healthy
        assert "did not stop within 0.5s" in engine.failure
        with pytest.raises(EngineFailed, match="chunk thread did not stop.*the model must be restarted"):
            next(generate(engine, request(), tmp_path / "next"))
    finally:
        signal.signal(signal.SIGUSR1, previous)
        release.set()
    for thread in [t for t in threading.enumerate() if t.name == "gamecraft-chunks"]:
        thread.join(60)  # released, it stops at its next step (bounded wait, so no thread outlives the test)
    assert no_chunk_thread()
    assert list(tmp_path.iterdir()) == []
