"""The world session on a tiny official-layout weights directory: seeds, resume, video start, state files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from gamecraft.engine import EngineConfig, GameCraftEngine
from gamecraft.media.video import read_video_frames, write_mp4
from gamecraft.pipeline.actions import parse_actions
from gamecraft.pipeline.presets import resolve_preset
from gamecraft.pipeline.state import StateError, WorldState, load_state, save_state
from gamecraft.serving.events import FileReady, Finished
from gamecraft.serving.generate import GenerationRequest, OutputNames, generate
from gamecraft.testing.tiny_weights import write_tiny_weights

SIZE = (32, 48)
IMAGE = Path(__file__).resolve().parents[1] / "assets" / "start.png"


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> GameCraftEngine:
    weights = write_tiny_weights(tmp_path_factory.mktemp("tiny-weights"))
    return GameCraftEngine.load(EngineConfig.for_cpu(weights, preload=("distilled",)))


def _run(engine, out: Path, actions: str, speeds: str, **kwargs) -> tuple[list[FileReady], Finished]:
    request = GenerationRequest(
        prompt=kwargs.pop("prompt", "a village"),
        preset=kwargs.pop("preset", resolve_preset("distilled", 2)),
        segments=parse_actions(actions, speeds),
        size=SIZE,
        **kwargs,
    )
    events = list(generate(engine, request, out, OutputNames(prefix="run", request_id="t")))
    return [e for e in events if isinstance(e, FileReady)], events[-1]


def _final_state(outputs) -> WorldState:
    return load_state(next(o.path for o in outputs if o.kind == "state"))


def test_outputs_in_order_with_expected_frames(engine, tmp_path):
    outputs, report = _run(
        engine, tmp_path, '["w", "left_rot"]', "[0.3, 20]", image=IMAGE, seed=1, last_frame=True, camera_preview=True
    )
    assert [o.kind for o in outputs] == ["chunk", "chunk", "video", "state", "last_frame", "preview"]
    assert report.seed == 1 and len(report.chunk_seconds) == 2
    frames, info = read_video_frames(outputs[2].path)
    assert frames.shape == (66, *SIZE, 3) and info.fps == 25
    assert read_video_frames(outputs[0].path)[0].shape[0] == 33
    state = _final_state(outputs)
    assert state.chunks_done == 2 and state.seed == 1 and state.actions == ["w 0.3", "left_rot 20°"]
    assert state.last_latents.shape == (1, 16, 9, SIZE[0] // 8, SIZE[1] // 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(o.path.name for o in outputs)


def test_same_seed_same_latents_and_different_seed_differs(engine, tmp_path):
    a = _final_state(_run(engine, tmp_path / "a", '["w", "d"]', "[0.3, 0.3]", image=IMAGE, seed=7)[0])
    b = _final_state(_run(engine, tmp_path / "b", '["w", "d"]', "[0.3, 0.3]", image=IMAGE, seed=7)[0])
    c = _final_state(_run(engine, tmp_path / "c", '["w", "d"]', "[0.3, 0.3]", image=IMAGE, seed=8)[0])
    assert torch.equal(a.last_latents, b.last_latents)
    assert not torch.allclose(a.last_latents, c.last_latents)


def test_resume_equals_uninterrupted(engine, tmp_path):
    full, _ = _run(
        engine, tmp_path / "full", '["w", "left_rot", "s+up_rot"]', "[0.3, 15, [0.2, 5]]", image=IMAGE, seed=11
    )
    first, _ = _run(engine, tmp_path / "p1", '["w"]', "[0.3]", image=IMAGE, seed=11)
    state_path = next(o.path for o in first if o.kind == "state")
    rest, report = _run(engine, tmp_path / "p2", '["left_rot", "s+up_rot"]', "[15, [0.2, 5]]", continue_from=state_path)
    assert report.seed == 11  # the stored seed is used when none is given
    assert [o.path.name for o in rest if o.kind == "chunk"] == ["run-11-t-chunk002.mp4", "run-11-t-chunk003.mp4"]
    resumed, uninterrupted = _final_state(rest), _final_state(full)
    assert resumed.chunks_done == uninterrupted.chunks_done == 3
    assert torch.equal(resumed.last_latents, uninterrupted.last_latents)
    assert np.allclose(resumed.pose, uninterrupted.pose)
    last_full = read_video_frames(next(o.path for o in full if o.kind == "chunk" and o.world_chunk == 3))[0]
    last_resumed = read_video_frames(next(o.path for o in rest if o.kind == "chunk" and o.world_chunk == 3))[0]
    assert np.array_equal(last_full, last_resumed)


def test_guidance_preset_runs_two_rows_with_negative_prompt(engine, tmp_path):
    preset = resolve_preset("full", num_inference_steps=2)
    plain = _final_state(_run(engine, tmp_path / "a", '["w"]', "[0.3]", image=IMAGE, seed=3, preset=preset)[0])
    negative = _final_state(
        _run(engine, tmp_path / "b", '["w"]', "[0.3]", image=IMAGE, seed=3, preset=preset, negative_prompt="blurry")[0]
    )
    assert not torch.allclose(plain.last_latents, negative.last_latents)


def test_start_from_video(engine, tmp_path):
    clip = np.zeros((40, 64, 96, 3), dtype=np.uint8)
    clip[..., 0] = np.linspace(0, 255, 40, dtype=np.uint8)[:, None, None]
    video = write_mp4(clip, tmp_path / "in.mp4")
    outputs, _ = _run(engine, tmp_path / "out", '["w"]', "[0.3]", video=video, seed=2)
    state = _final_state(outputs)
    assert state.chunks_done == 1
    short = write_mp4(clip[:20], tmp_path / "short.mp4")
    with pytest.raises(ValueError, match=r"^video has 20 frames; starting from a video needs at least 33$"):
        _run(engine, tmp_path / "bad", '["w"]', "[0.3]", video=short, seed=2)


def test_request_validation(engine, tmp_path):
    with pytest.raises(ValueError, match=r"^give exactly one of image, video or continue_from \(got none\)$"):
        _run(engine, tmp_path, '["w"]', "[0.3]")
    with pytest.raises(ValueError, match=r"^give exactly one of image, video or continue_from \(got image, video\)$"):
        _run(engine, tmp_path, '["w"]', "[0.3]", image=IMAGE, video=IMAGE)
    with pytest.raises(ValueError, match=r"^seed must be between 0 and 2147483647, got -1$"):
        _run(engine, tmp_path, '["w"]', "[0.3]", image=IMAGE, seed=-1)


# -- state files ----------------------------------------------------------------------------------


def _state(chunks_done=1) -> WorldState:
    return WorldState(
        last_latents=torch.randn(1, 16, 9, 4, 6),
        height=32,
        width=48,
        seed=5,
        chunks_done=chunks_done,
        prompt="p",
        actions=["w 0.2"],
    )


def _save_v1(state: WorldState, path: Path) -> Path:
    """A state file as format version 1 wrote it: also a reference latent (the last latent frame)."""
    meta = {**state.metadata(), "format_version": 1}
    save_file(
        {"last_latents": state.last_latents, "ref_latents": state.last_latents[:, :, -1:].contiguous()},
        str(path),
        metadata={"gamecraft": json.dumps(meta)},
    )
    return path


def test_version_1_state_files_still_load(tmp_path):
    state = _state()
    loaded = load_state(_save_v1(state, tmp_path / "v1.safetensors"), 32, 48)
    assert torch.equal(loaded.last_latents, state.last_latents) and loaded.metadata() == state.metadata()
    assert loaded.metadata()["format_version"] == 2


def test_state_round_trip(tmp_path):
    state = _state()
    loaded = load_state(save_state(state, tmp_path / "s.safetensors"), 32, 48)
    assert torch.equal(loaded.last_latents, state.last_latents) and loaded.metadata() == state.metadata()
    assert [p.name for p in tmp_path.iterdir()] == ["s.safetensors"]


def _tamper(path: Path, tensors=None, meta_update=None, meta_raw=None):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["gamecraft"])
    data = load_file(str(path))
    data.update(tensors or {})
    meta.update(meta_update or {})
    save_file(data, str(path), metadata={"gamecraft": meta_raw if meta_raw is not None else json.dumps(meta)})


BAD_STATES = [
    ("resolution", lambda p: None, (64, 96), "state file: made at 32×48; this request generates 64×96"),
    (
        "nan",
        lambda p: _tamper(p, {"last_latents": torch.full((1, 16, 9, 4, 6), float("nan"))}),
        (32, 48),
        "state file: last_latents contains NaN or infinite values",
    ),
    (
        "shape",
        lambda p: _tamper(p, {"last_latents": torch.zeros(1, 16, 5, 4, 6)}),
        (32, 48),
        "state file: last_latents has shape (1, 16, 5, 4, 6); expected [1, 16, 9, 4, 6]",
    ),
    (
        "dtype",
        lambda p: _tamper(_save_v1(_state(), p), {"ref_latents": torch.zeros(1, 16, 1, 4, 6, dtype=torch.int32)}),
        (32, 48),
        "state file: ref_latents has dtype torch.int32",
    ),
    (
        "extra",
        lambda p: _tamper(_save_v1(_state(), p), {"evil": torch.zeros(1)}),
        (32, 48),
        "state file: expected tensors last_latents and ref_latents, found ['evil', 'last_latents', 'ref_latents']",
    ),
    (
        "extra v2",
        lambda p: _tamper(p, {"ref_latents": torch.zeros(1, 16, 1, 4, 6)}),
        (32, 48),
        "state file: expected tensor last_latents, found ['last_latents', 'ref_latents']",
    ),
    (
        "version",
        lambda p: _tamper(p, meta_update={"format_version": 99}),
        (32, 48),
        "state file: format version 99; this package reads versions 1 and 2",
    ),
    (
        "model",
        lambda p: _tamper(p, meta_update={"model": "other-model"}),
        (32, 48),
        "state file: made for model 'other-model', not hunyuan-gamecraft-1.0",
    ),
    ("meta json", lambda p: _tamper(p, meta_raw="{not json"), (32, 48), "state file: metadata is not valid JSON"),
    (
        "seed",
        lambda p: _tamper(p, meta_update={"seed": "x"}),
        (32, 48),
        "state file: 'seed' must be an integer in [0, 9223372036854775807], got 'x'",
    ),
    (
        "pose",
        lambda p: _tamper(p, meta_update={"pose": [[1, 0], [0, 1]]}),
        (32, 48),
        "state file: 'pose' must be a 4×4 list of finite numbers",
    ),
]


@pytest.mark.parametrize("name,damage,size,message", BAD_STATES, ids=[b[0] for b in BAD_STATES])
def test_bad_state_files(tmp_path, name, damage, size, message):
    path = save_state(_state(), tmp_path / "s.safetensors")
    damage(path)
    with pytest.raises(StateError) as info:
        load_state(path, *size)
    assert str(info.value) == message


def test_foreign_truncated_and_pickled_files(tmp_path):
    path = save_state(_state(), tmp_path / "s.safetensors")
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(StateError, match=r"^state file: not a readable safetensors file"):
        load_state(truncated)
    pickled = tmp_path / "p.safetensors"
    torch.save({"last_latents": torch.zeros(1)}, pickled)
    with pytest.raises(StateError, match=r"^state file: not a readable safetensors file"):
        load_state(pickled)
    plain = tmp_path / "plain.safetensors"
    save_file({"last_latents": torch.zeros(1)}, str(plain))
    with pytest.raises(StateError, match=r"^state file: no GameCraft metadata"):
        load_state(plain)


def test_go_fast_uses_the_fp8_twin_and_stays_close(engine, tmp_path):
    from gamecraft.model.fp8 import FP8Linear

    exact = _final_state(_run(engine, tmp_path / "a", '["w"]', "[0.3]", image=IMAGE, seed=4)[0])
    go_fast = _final_state(
        _run(
            engine,
            tmp_path / "b",
            '["w"]',
            "[0.3]",
            image=IMAGE,
            seed=4,
            preset=resolve_preset("distilled", 2, go_fast=True),
        )[0]
    )
    twin = engine.transformer("distilled", go_fast=True)
    assert isinstance(twin.single_blocks[0].linear1, FP8Linear)
    assert isinstance(engine.transformer("distilled").single_blocks[0].linear1, torch.nn.Linear)
    rel = float((go_fast.last_latents - exact.last_latents).norm() / exact.last_latents.norm())
    assert 0 < rel < 0.1
