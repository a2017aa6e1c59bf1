"""generate()'s typed events and the progress records made from them (what the predictor publishes and the
controller page shows), on a tiny engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from gamecraft.pipeline.actions import parse_actions
from gamecraft.pipeline.presets import resolve_preset
from gamecraft.serving import events as ev
from gamecraft.serving.generate import GenerationRequest, generate
from gamecraft.testing.random_weights import tiny_random_engine

IMAGE = Path(__file__).resolve().parents[1] / "assets" / "start.png"


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    request = GenerationRequest(
        prompt="a village",
        preset=resolve_preset("distilled", 3),
        segments=parse_actions('["w", "d"]', "[0.3, 0.3]"),
        image=IMAGE,
        seed=5,
        size=(32, 48),
    )
    return list(generate(tiny_random_engine(), request, tmp_path_factory.mktemp("out")))


def test_events_come_in_order_with_one_step_event_per_denoising_step(events):
    started, finished = events[0], events[-1]
    assert isinstance(started, ev.Started) and isinstance(finished, ev.Finished)
    assert (started.seed, started.chunks, started.first_world_chunk, started.steps) == (5, 2, 1, 3)
    steps = [(e.chunk, e.step) for e in events if isinstance(e, ev.StepDone)]
    assert steps == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]

    def position(event_type, **fields):
        return next(
            i
            for i, e in enumerate(events)
            if isinstance(e, event_type) and all(getattr(e, k) == v for k, v in fields.items())
        )

    for chunk in (
        1,
        2,
    ):  # steps, then the decode, then the chunk and its file (chunk 2 may run ahead of chunk 1's files)
        assert (
            position(ev.StepDone, chunk=chunk, step=3)
            < position(ev.ChunkDenoised, chunk=chunk)
            < position(ev.ChunkDone, chunk=chunk)
            < position(ev.FileReady, kind="chunk", world_chunk=chunk)
        )
    files = [e.kind for e in events if isinstance(e, ev.FileReady)]
    assert files == ["chunk", "chunk", "video", "state"]
    done = [e for e in events if isinstance(e, ev.ChunkDone)]
    assert [d.world_chunk for d in done] == [1, 2] and done[-1].eta_s == 0
    assert finished.world_chunks == 2 and len(finished.chunk_seconds) == 2


def test_progress_records_follow_the_events(events):
    started = events[0]
    records = [r for r in (ev.progress(e, started) for e in events) if r is not None]
    assert [r["phase"] for r in records] == ["start"] + ["denoise"] * 3 + ["decode"] + ["denoise"] * 3 + [
        "decode",
        "done",
    ]
    assert all(r["chunks"] == 2 and r["steps"] == 3 and r["seed"] == 5 for r in records)
    assert records[-1]["eta_s"] == 0 and records[-1]["world_chunk"] == 2
    elapsed = [r["elapsed_s"] for r in records]
    assert elapsed == sorted(elapsed)
    assert all(isinstance(e.as_dict()["event"], str) for e in events)
