"""Chunks generated on a background thread, one ahead of whoever writes them.

After a chunk is decoded, :func:`gamecraft.serving.generate.generate` writes it twice with H.264 (its own
mp4 and the whole video), about a second of CPU work per chunk on a 16-core host (2.4 s on 2 cores). Done
in line, the GPUs idle meanwhile. :func:`chunks_ahead` runs ``session.generate_chunk`` on a thread, so
chunk k+1 is denoised while chunk k is being written; the results come out in order, the same tensors as
in line (the thread runs the same code; only the wall-clock order changes). The thread's denoising steps
come out too, in the consumer's thread, as they happen.

Stopping: when the consumer stops iterating (a cancellation raised in its thread, an error while writing,
``close()``), the ``stop`` signal is set; the chunk in progress ends before its next denoising step
(``gamecraft.pipeline.sampling.GenerationStopped``) and the thread is joined before the iterator finishes,
so no GPU work outlives the request. A ``stop`` set from outside ends the iteration the same way, with
``GenerationStopped`` raised in the consumer. The join is bounded (:data:`JOIN_TIMEOUT_S`): a thread still
running then (a step or a decode that never returns) marks the engine failed
(:meth:`gamecraft.engine.Engine.mark_failed`), since its GPU work would overlap the next request's. An
error in the thread (out of memory, a dead GPU worker) is raised in the consumer as the same exception
object.

A chunk's VAE decode stays on the chunk thread, in line with its steps: decoding it on a second stream
beside the next chunk's steps was measured on an H200 and saved nothing (the transformer's kernels keep
every SM busy, so the two took turns: BENCHMARKS.md, "go_fast in whole predictions, second round").
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from gamecraft.pipeline.camera import ChunkPoses
from gamecraft.pipeline.sampling import GenerationStopped, StepInfo
from gamecraft.pipeline.session import ChunkResult, WorldSession

POLL_S = 0.2  # how often a blocked hand-over or wait looks at the stop flag / the thread
# How long a stopped chunk thread may take to finish the step or decode it is in: the longest measured are a
# two-row full-preset step (10.9 s, L40S-class) and the decode graph's cold compile (23.6 s; BENCHMARKS.md).
JOIN_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Step:
    """Denoising step ``index`` (0-based, of ``total``) of chunk ``position`` (0-based within the request)
    finished; ``seconds`` since the previous step ended (or the chunk's start), measured after the device
    finished the step's work."""

    position: int
    index: int
    total: int
    cached: bool
    seconds: float


def step_recorder(position: int, device: torch.device, sink: Callable[[Step], None]) -> Callable[[StepInfo], None]:
    """A ``generate_chunk`` step callback handing a :class:`Step` to ``sink``. It synchronises the device
    once per step (after the step's work is queued) so that the times are real; that costs microseconds
    per multi-second step. Only scalars leave the callback: the step's tensors are not kept alive."""
    last = [time.perf_counter()]

    def on_step(info: StepInfo) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        seconds, last[0] = now - last[0], now
        sink(Step(position, info.index, info.total, bool(info.cached), seconds))

    return on_step


@dataclass(frozen=True)
class _Result:
    result: ChunkResult


_DONE = object()


def thread_cuda_index(device: torch.device, caller_index: int | None) -> int | None:
    """The CUDA device the chunk thread makes current: ``device``'s index, or, for a bare ``cuda``
    (the engine's usual device), the calling thread's current one; ``None`` off CUDA."""
    if device.type != "cuda":
        return None
    return device.index if device.index is not None else caller_index


def chunks_ahead(
    session: WorldSession,
    chunks: Sequence[tuple[ChunkPoses, str]],
    ahead: int = 1,
    stop: threading.Event | None = None,
    steps: bool = False,
    join_timeout_s: float | None = None,
) -> Iterator[Step | ChunkResult]:
    """``session.generate_chunk(poses, label)`` for each of ``chunks`` on a background thread, at most
    ``ahead`` finished chunks ahead of the consumer (plus the one in progress). Yields each
    :class:`ChunkResult` and, with ``steps``, every :class:`Step` too, in the order they happened. ``stop``
    (made here when not given) is set when the iterator ends; set from outside, the iteration ends with
    :class:`GenerationStopped`. Close the iterator (``contextlib.closing``) when not exhausting it.
    ``join_timeout_s``: how long the end waits for the thread before marking the engine failed (default
    :data:`JOIN_TIMEOUT_S`)."""
    join_timeout_s = JOIN_TIMEOUT_S if join_timeout_s is None else join_timeout_s
    events: queue.Queue = queue.Queue()
    slots = threading.Semaphore(ahead)  # finished chunks not yet taken by the consumer
    stop = stop or threading.Event()
    device = session.engine.device
    cuda_index = thread_cuda_index(device, torch.cuda.current_device() if device.type == "cuda" else None)

    def take_slot() -> bool:
        while not stop.is_set():
            if slots.acquire(timeout=POLL_S):
                return True
        return False

    def produce() -> None:
        if cuda_index is not None:
            torch.cuda.set_device(cuda_index)  # CUDA's current device is per thread
        try:
            for position, (poses, label) in enumerate(chunks):
                on_step = step_recorder(position, device, events.put) if steps else None
                result = session.generate_chunk(poses, label, stop=stop, on_step=on_step)
                if not take_slot():
                    raise GenerationStopped(f"stopped after chunk {position + 1} of {len(chunks)}")
                events.put(_Result(result))
            events.put(_DONE)
        except BaseException as err:  # noqa: BLE001 - re-raised in the consumer's thread (a stop too)
            events.put(err)

    thread = threading.Thread(target=produce, name="gamecraft-chunks", daemon=True)
    thread.start()
    try:
        while True:
            try:
                item = events.get(timeout=POLL_S)
            except queue.Empty:
                if not thread.is_alive() and events.empty():
                    raise RuntimeError("the chunk thread ended without a result") from None
                continue
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, _Result):
                slots.release()
                item = item.result
            yield item
    finally:
        stop.set()
        thread.join(join_timeout_s)
        if thread.is_alive():
            session.engine.mark_failed(
                f"the chunk thread did not stop within {join_timeout_s:g}s of the end of its request"
            )
