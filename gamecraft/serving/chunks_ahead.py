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
so no GPU work outlives the request. An error in the thread (out of memory, a dead GPU worker) is raised
in the consumer as the same exception object.

Decoding behind (``decode_behind``): the chunk thread only denoises; each denoised chunk is decoded by a
second thread on its own CUDA stream, of high priority, while the chunk thread goes on with the next
chunk's steps. The decoder's kernels then fill what the transformer's leave idle (its kernels are
scheduled first where both wait), instead of the transformer waiting ≈ 2.7 s per chunk for the decode
(H200, BENCHMARKS.md). One decode is in flight at a time; the results are the same tensors, in the same
order. It needs an engine whose decode may run beside a pass (one GPU: ``Engine.decodes_beside_passes``)
and the memory of both at once (the memory plan's ``decode_behind``).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch

from gamecraft.pipeline.camera import ChunkPoses
from gamecraft.pipeline.sampling import GenerationStopped, StepInfo
from gamecraft.pipeline.session import ChunkResult, DenoisedChunk, WorldSession

POLL_S = 0.2  # how often a blocked hand-over or wait looks at the stop flag / the thread


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
    """A ``generate_chunk`` step callback handing a :class:`Step` to ``sink``. It waits for the calling
    thread's CUDA stream once per step (after the step's work is queued) so that the times are real; that
    costs microseconds per multi-second step (a decode on another stream is not waited for). Only scalars
    leave the callback: the step's tensors are not kept alive."""
    last = [time.perf_counter()]

    def on_step(info: StepInfo) -> None:
        if device.type == "cuda":
            torch.cuda.current_stream(device).synchronize()
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


class _DecoderBehind:
    """Decodes denoised chunks on one worker thread (its own high-priority CUDA stream on a GPU), in
    order, one at a time; ``hand_over`` receives each :class:`ChunkResult` and says whether the consumer
    still wants more."""

    def __init__(self, session: WorldSession, cuda_index: int | None, hand_over: Callable[[ChunkResult], bool]):
        self.session, self.cuda_index, self.hand_over = session, cuda_index, hand_over
        self.stream: torch.cuda.Stream | None = None
        self.pending: Future | None = None
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="gamecraft-decode", initializer=self._start)

    def _start(self) -> None:
        if self.cuda_index is not None:
            torch.cuda.set_device(self.cuda_index)
            self.stream = torch.cuda.Stream(self.cuda_index, priority=-1)  # -1: the higher priority

    def _decode(self, chunk: DenoisedChunk, ready: torch.cuda.Event | None) -> bool:
        if self.stream is None:
            return self.hand_over(self.session.decode(chunk))
        with torch.cuda.stream(self.stream):
            self.stream.wait_event(ready)  # the latents are complete on the chunk thread's stream
            chunk.latents.record_stream(self.stream)  # not reused by the other stream while read here
            result = self.session.decode(chunk)  # returns once the frames are on the host
        return self.hand_over(result)

    def wait(self) -> bool:
        """Wait for the decode in flight (raising its error); False when the consumer stopped taking."""
        pending, self.pending = self.pending, None
        return pending is None or pending.result()

    def submit(self, chunk: DenoisedChunk) -> bool:
        """Decode ``chunk`` once the previous decode is done; False when the consumer stopped taking."""
        if not self.wait():
            return False
        ready = None
        if self.cuda_index is not None:
            ready = torch.cuda.Event()
            ready.record()
        self.pending = self.pool.submit(self._decode, chunk, ready)
        return True

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def chunks_ahead(
    session: WorldSession,
    chunks: Sequence[tuple[ChunkPoses, str]],
    ahead: int = 1,
    stop: threading.Event | None = None,
    steps: bool = False,
    decode_behind: bool = False,
) -> Iterator[Step | ChunkResult]:
    """``session.generate_chunk(poses, label)`` for each of ``chunks`` on a background thread, at most
    ``ahead`` finished chunks ahead of the consumer (plus the one in progress). Yields each
    :class:`ChunkResult` and, with ``steps``, every :class:`Step` too, in the order they happened. ``stop``
    (made here when not given) is set when the iterator ends; close the iterator (``contextlib.closing``)
    when not exhausting it. ``decode_behind``: decode each chunk on a second thread while the next one is
    denoised (see the module docstring)."""
    events: queue.Queue = queue.Queue()
    slots = threading.Semaphore(ahead)  # finished chunks not yet taken by the consumer
    stop = stop or threading.Event()
    device = session.engine.device
    cuda_index = thread_cuda_index(device, torch.cuda.current_device() if device.type == "cuda" else None)

    def hand_over(result: ChunkResult) -> bool:
        while not stop.is_set():
            if slots.acquire(timeout=POLL_S):
                events.put(_Result(result))
                return True
        return False

    def produce() -> None:
        if cuda_index is not None:
            torch.cuda.set_device(cuda_index)  # CUDA's current device is per thread
        decoder = _DecoderBehind(session, cuda_index, hand_over) if decode_behind else None
        try:
            for position, (poses, label) in enumerate(chunks):
                on_step = step_recorder(position, device, events.put) if steps else None
                if decoder is None:
                    if not hand_over(session.generate_chunk(poses, label, stop=stop, on_step=on_step)):
                        return
                elif not decoder.submit(session.denoise_next(poses, label, stop=stop, on_step=on_step)):
                    return
            if decoder is not None and not decoder.wait():
                return
            events.put(_DONE)
        except GenerationStopped:
            return
        except BaseException as err:  # noqa: BLE001 - re-raised in the consumer's thread
            if decoder is not None:  # the chunk decoding meanwhile reaches the consumer before the error
                with contextlib.suppress(BaseException):
                    decoder.wait()
            events.put(err)
        finally:
            if decoder is not None:
                decoder.close()

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
        thread.join()
