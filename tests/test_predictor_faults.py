"""Faults inside a prediction, in-process (tiny weights): an out-of-memory error gives a clear failure,
leaves no files, and the next prediction works; outputs of finished predictions do not pile up."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
from cog import Path as CogPath
from conftest import REPO_ROOT

IMAGE = CogPath(REPO_ROOT / "assets" / "start.png")


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    mp = pytest.MonkeyPatch()
    mp.setenv("GAMECRAFT_WEIGHTS", "tiny")
    mp.setenv("GAMECRAFT_TINY_SIZE", "32x48")
    mp.setenv("TMPDIR", str(root))
    mp.syspath_prepend(str(REPO_ROOT))
    import tempfile

    tempfile.tempdir = None  # pick up TMPDIR
    module = importlib.import_module("predict")
    module = importlib.reload(module)
    mp.setattr(module, "OUTPUT_ROOT", root / "outputs")
    pred = module.Predictor()
    pred.setup()
    yield pred, root / "outputs"
    mp.undo()
    tempfile.tempdir = None
    sys.modules.pop("predict", None)


def _run(pred, **overrides):
    inputs = dict(
        image=IMAGE,
        prompt="a village",
        actions='["w", "d"]',
        action_speeds="[0.2, 0.2]",
        preset="distilled",
        num_inference_steps=1,
        guidance_scale=None,
        seed=3,
        negative_prompt="",
        fps=25,
        video=None,
        continue_from=None,
        trajectory=None,
        return_state=True,
        return_last_frame=False,
        camera_preview=False,
        go_fast=False,
    )
    inputs.update(overrides)
    return list(pred.predict(**inputs))


def test_out_of_memory_is_a_clear_failure_and_the_model_recovers(predictor, monkeypatch):
    pred, outputs_root = predictor
    model = pred.service.engine.transformer("distilled")
    calls = {"n": 0}
    original = type(model).forward

    def failing_forward(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # mid-way through the first chunk
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "forward", failing_forward)
    with pytest.raises(RuntimeError, match=r"^out of GPU memory during this prediction; memory was released"):
        _run(pred, num_inference_steps=4)
    assert [p for p in outputs_root.rglob("*") if p.is_file()] == []
    monkeypatch.setattr(type(model), "forward", original)
    outputs = _run(pred)
    assert len(outputs) == 4 and all(p.exists() for p in outputs)


def test_outputs_do_not_accumulate_across_predictions(predictor):
    pred, outputs_root = predictor
    first = _run(pred)
    second = _run(pred)
    assert not any(p.exists() for p in first)  # removed when the next prediction started
    assert all(p.exists() for p in second)
    assert len([p for p in outputs_root.rglob("*") if p.is_file()]) == len(second)


def test_out_of_memory_that_failed_the_engine_says_the_model_must_be_restarted(predictor, monkeypatch):
    """An out-of-memory on GPU 0 in a multi-GPU pass fails the runtime (the workers are out of step): the
    error says so and does not claim that memory was released and the model is ready again."""
    from gamecraft.parallel import WorkerFailure

    pred, outputs_root = predictor
    engine = pred.service.engine

    def failed(*args, **kwargs):  # what ParallelRuntime raises for a fault in rank 0's share of a pass
        engine.mark_failed("rank 0 failed in Forward: OutOfMemoryError: CUDA out of memory")
        raise WorkerFailure(f"{engine.failure}; the model must be restarted")

    monkeypatch.setattr(engine, "_failure", None)  # restored when the test ends: the engine works again
    monkeypatch.setattr(pred.service, "generate", failed)
    with pytest.raises(WorkerFailure, match=r"CUDA out of memory; the model must be restarted$"):
        _run(pred)
    assert not pred.healthcheck()
    assert [p for p in outputs_root.rglob("*") if p.is_file()] == []
