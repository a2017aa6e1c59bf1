"""The warm-up compiles and times every pass shape the configured presets run, so no request compiles:
counted with dynamo's compile counter on tiny weights (CPU)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from gamecraft.engine import EngineConfig, GameCraftEngine, PassShape
from gamecraft.pipeline.actions import parse_actions
from gamecraft.pipeline.presets import PRESETS, resolve_preset
from gamecraft.serving.budget import costs_from_warm_up, warm_up_shapes
from gamecraft.serving.generate import GenerationRequest, generate
from gamecraft.testing.tiny_weights import write_tiny_weights

IMAGE = Path(__file__).resolve().parents[1] / "assets" / "start.png"
SIZE = (32, 48)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_tiny_weights(tmp_path_factory.mktemp("tiny-weights"))


def _compiled_engine(weights: Path, counter: CompileCounter) -> GameCraftEngine:
    torch._dynamo.reset()
    config = replace(EngineConfig.for_cpu(weights, preload=("distilled",)), compile=True, compile_backend=counter)
    return GameCraftEngine.load(config)


def _request(preset) -> GenerationRequest:
    return GenerationRequest(
        prompt="a village",
        preset=preset,
        segments=parse_actions('["w", "d"]', "[0.3, 0.3]"),
        image=IMAGE,
        seed=2,
        size=SIZE,
        return_state=False,
    )


def test_shapes_of_both_presets_and_go_fast():
    shapes = warm_up_shapes([PRESETS["distilled"], PRESETS["full"]], go_fast=True)
    assert set(shapes) == {
        PassShape(rows, frames, go_fast) for rows in (1, 2) for frames in (10, 18) for go_fast in (False, True)
    }
    assert warm_up_shapes([PRESETS["distilled"]], go_fast=False) == [PassShape(1, 10), PassShape(1, 18)]
    # a GPU that runs the guidance rows one at a time never runs a two-row pass: nothing to warm for it
    assert warm_up_shapes([PRESETS["distilled"], PRESETS["full"]], go_fast=True, rows_at_once=1) == [
        PassShape(1, 10),
        PassShape(1, 18),
        PassShape(1, 10, True),
        PassShape(1, 18, True),
    ]


def test_a_full_and_a_go_fast_request_after_the_warm_up_compile_nothing(weights, tmp_path):
    counter = CompileCounter()
    engine = _compiled_engine(weights, counter)
    shapes = warm_up_shapes([PRESETS["distilled"], PRESETS["full"]], go_fast=True)
    warm = engine.warm_up(shapes, *SIZE)
    assert set(warm.pass_seconds) == set(shapes) and all(s > 0 for s in warm.pass_seconds.values())
    compiled = counter.frame_count
    assert compiled > 0
    costs = costs_from_warm_up(warm)
    assert costs.pass_seconds(2, first=False) == warm.pass_seconds[PassShape(2, 18)]  # measured, not derived
    for name, preset in (("full", resolve_preset("full", 2)), ("fast", resolve_preset("distilled", 2, go_fast=True))):
        list(generate(engine, _request(preset), tmp_path / name))
    assert engine.loaded_variants == ("distilled", "full")  # the full request loaded the other transformer
    assert counter.frame_count == compiled  # ... and compiled nothing


def test_without_the_full_preset_in_the_warm_up_its_request_compiles(weights, tmp_path):
    counter = CompileCounter()
    engine = _compiled_engine(weights, counter)
    engine.warm_up(warm_up_shapes([PRESETS["distilled"]], go_fast=False), *SIZE)
    compiled = counter.frame_count
    list(generate(engine, _request(resolve_preset("full", 2)), tmp_path / "full"))
    assert counter.frame_count > compiled  # two-row passes were not warmed: what setup() must avoid


def test_shapes_run_once_are_compiled_and_their_costs_derived(weights, tmp_path):
    """setup() times only the preloaded preset's shapes; the others run once (compiled, not timed): a full
    request still compiles nothing, and its two-row pass costs twice the measured one-row pass."""
    counter = CompileCounter()
    engine = _compiled_engine(weights, counter)
    shapes = warm_up_shapes([PRESETS["distilled"], PRESETS["full"]], go_fast=True)
    timed = warm_up_shapes([PRESETS["distilled"]], go_fast=True)
    warm = engine.warm_up(shapes, *SIZE, timed=timed)
    assert set(warm.pass_seconds) == set(timed) and set(warm.peak_bytes) == set(shapes)
    compiled = counter.frame_count
    costs = costs_from_warm_up(warm)
    for first, frames in ((True, 10), (False, 18)):
        for go_fast in (False, True):
            one_row = warm.pass_seconds[PassShape(1, frames, go_fast)]
            assert costs.pass_seconds(2, first, go_fast) == pytest.approx(2 * one_row)
    list(generate(engine, _request(resolve_preset("full", 2)), tmp_path / "full"))
    assert counter.frame_count == compiled
