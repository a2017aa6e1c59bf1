"""PinnedOffload keeps outputs identical and leaves the module's tensors on the host afterwards."""

from __future__ import annotations

import torch

from gamecraft.weights.offload import PinnedOffload


def test_offload_round_trip_keeps_outputs_and_tied_weights():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=True))
    module[1].weight = module[0].weight  # tied, as in language models
    module.register_buffer("scale", torch.tensor(2.0))
    tokens = torch.tensor([1, 2, 3])
    expected = module(tokens) * module.scale
    offload = PinnedOffload(module, torch.device("cpu"))
    assert len(offload._tensors) == 3  # the tied weight once, the bias, the buffer
    with offload.on_device() as on_device:
        assert torch.equal(on_device(tokens) * on_device.scale, expected)
    assert all(t.device.type == "cpu" for t in module.parameters())
    assert module[1].weight is module[0].weight
    assert torch.equal(module(tokens) * module.scale, expected)


def test_background_pinning_is_waited_for_by_the_first_prompt():
    """The engine pins the text encoders in the background (setup overlaps it with the transformer
    load); the first encode waits for that work and then uses its offloads."""
    import threading

    from gamecraft.engine.local import _PIN_POOL
    from gamecraft.testing.random_weights import tiny_random_engine

    engine = tiny_random_engine()
    release, threads = threading.Event(), []

    def pin():
        threads.append(threading.current_thread().name)
        release.wait(5)
        return [PinnedOffload(engine.text_encoders.llm, torch.device("cpu"))]

    engine._pinning = _PIN_POOL.submit(pin)
    timer = threading.Timer(0.2, release.set)
    timer.start()
    want = engine.encode_text("a road", "", guidance=False)
    assert release.is_set() and engine._pinning is None and len(engine._text_offload) == 1
    assert threads == [next(t.name for t in threading.enumerate() if t.name.startswith("gamecraft-pin"))]
    torch.testing.assert_close(engine.encode_text("a road", "", guidance=False).states, want.states)
