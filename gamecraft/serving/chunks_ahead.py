"""Chunks generated on a background thread, one ahead of whoever writes them.

After a chunk is decoded, :func:`gamecraft.serving.generate.generate` writes it twice with H.264 (its own mp4
and the whole video), about a second of CPU work per chunk on a 16-core host (2.4 s on 2 cores). Done
in line, the GPUs idle meanwhile. :func:`chunks_ahead` runs ``session.generate_chunk`` on a thread,
so chunk k+1 is denoised while chunk k is being written; the results come out in order, the same
tensors as in line (the thread runs the same code; only the wall-clock order changes).

Stopping: when the consumer stops iterating (a cancellation raised in its thread, an error while
writing, ``close()``), the thread abandons its chunk at the next denoising step and is joined before
the iterator finishes, so no GPU work outlives the request. An error in the thread (out of memory, a
dead GPU worker) is raised in the consumer as the same exception object.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator, Sequence

import torch

from gamecraft.pipeline.camera import ChunkPoses
from gamecraft.pipeline.sampling import StepInfo, log_steps
from gamecraft.pipeline.session import ChunkResult, WorldSession

_DONE = object()
POLL_S = 0.2  # how often a blocked hand-over or wait looks at the stop flag / the thread


class ChunkAbandoned(Exception):
    """Raised at a denoising step inside the thread once the consumer has gone."""


def thread_cuda_index(device: torch.device, caller_index: int | None) -> int | None:
    """The CUDA device the chunk thread makes current: ``device``'s index, or, for a bare ``cuda``
    (the engine's usual device), the calling thread's current one; ``None`` off CUDA."""
    if device.type != "cuda":
        return None
    return device.index if device.index is not None else caller_index


def chunks_ahead(session: WorldSession, chunks: Sequence[tuple[ChunkPoses, str]], ahead: int = 1
                 ) -> Iterator[ChunkResult]:
    """``session.generate_chunk(poses, label)`` for each of ``chunks``, computed on a background thread
    at most ``ahead`` finished chunks ahead of the consumer (plus the one in progress); yields them in
    order. Close the iterator (``contextlib.closing``) when not exhausting it."""
    results: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()
    device = session.engine.device
    cuda_index = thread_cuda_index(device, torch.cuda.current_device() if device.type == "cuda" else None)

    def hand_over(item) -> bool:
        while not stop.is_set():
            try:
                results.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        if cuda_index is not None:
            torch.cuda.set_device(cuda_index)  # CUDA's current device is per thread
        try:
            for poses, label in chunks:
                step_log = log_steps(session.state.chunks_done, device)

                def on_step(info: StepInfo) -> None:
                    if stop.is_set():
                        raise ChunkAbandoned
                    step_log(info)

                if not hand_over(session.generate_chunk(poses, label, on_step=on_step)):
                    return
            hand_over(_DONE)
        except ChunkAbandoned:
            return
        except BaseException as err:  # noqa: BLE001 - re-raised in the consumer's thread
            hand_over(err)

    thread = threading.Thread(target=produce, name="gamecraft-chunks", daemon=True)
    thread.start()
    try:
        while True:
            try:
                item = results.get(timeout=POLL_S)
            except queue.Empty:
                if not thread.is_alive() and results.empty():
                    raise RuntimeError("the chunk thread ended without a result") from None
                continue
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
