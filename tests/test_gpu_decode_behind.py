"""On a CUDA GPU (skipped elsewhere): decoding behind runs each chunk's VAE decode on its own high-priority
stream, beside the next chunk's steps, and the files are the same bytes as decoding in line."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from gamecraft.pipeline.actions import parse_actions
from gamecraft.pipeline.presets import resolve_preset
from gamecraft.serving.events import FileReady
from gamecraft.serving.generate import GenerationRequest, generate
from gamecraft.testing.random_weights import tiny_random_engine

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

IMAGE = Path(__file__).resolve().parents[1] / "assets" / "start.png"


def test_decoding_behind_uses_a_high_priority_stream_and_gives_the_same_files(tmp_path, monkeypatch):
    engine = tiny_random_engine("cuda")
    request = GenerationRequest(
        prompt="a village",
        preset=resolve_preset("distilled", 3),
        segments=parse_actions('["w", "left_rot", "d", "a"]', "[0.3, 20, 0.2, 0.3]"),
        size=(64, 96),
        image=IMAGE,
        seed=5,
    )
    seen = []
    decode = engine.decode

    def recording(latents):
        stream = torch.cuda.current_stream()
        seen.append((threading.current_thread().name, stream == torch.cuda.default_stream(), stream.priority))
        return decode(latents)

    monkeypatch.setattr(engine, "decode", recording)
    outputs = {}
    for behind in (False, True):
        events = list(generate(engine, request, tmp_path / str(behind), decode_behind=behind))
        outputs[behind] = [e.path.read_bytes() for e in events if isinstance(e, FileReady) and e.kind != "state"]
    inline, behind = seen[:4], seen[4:]
    assert all(name == "gamecraft-chunks" and default for name, default, _ in inline)
    assert all(name == "gamecraft-decode_0" and not default and priority < 0 for name, default, priority in behind)
    assert outputs[True] == outputs[False] and len(outputs[True]) == 5
