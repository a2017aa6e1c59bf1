"""What :func:`gamecraft.serving.generate.generate` reports while it runs: typed events, in order.

A request yields :class:`Started`, then for every chunk its :class:`StepDone` events (one per denoising
step), :class:`ChunkDenoised` (the decode starts), :class:`ChunkDone` and the chunk's :class:`FileReady`,
then the request's other files and :class:`Finished`. Chunks are generated one ahead of the writes, so the
steps of chunk k+1 may arrive before chunk k's files. Chunk numbers are 1-based: ``chunk`` within the
request, ``world_chunk`` within the world (a continued world goes on counting).

Every event has :meth:`~Event.as_dict` (JSON-able, with an ``event`` name): the predictor turns events into
coglet metrics and log lines, the CLI prints them, the controller page shows progress and ETA from them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path


@dataclass(frozen=True)
class _Event:
    def as_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data = {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}
        return {"event": EVENT_NAMES[type(self)], **data}


@dataclass(frozen=True)
class Started(_Event):
    """The start is encoded and the seed is known. ``first_world_chunk``: the world chunk number of this
    request's first chunk; ``estimate_s``: the time estimate (None when no cost table was given)."""

    seed: int
    chunks: int
    first_world_chunk: int
    preset: str
    steps: int
    height: int
    width: int
    estimate_s: float | None


@dataclass(frozen=True)
class StepDone(_Event):
    """One denoising step finished. ``seconds``: this step; ``elapsed_s``: since the request started;
    ``eta_s``: the rest of the request, from the time per step so far and each chunk's decode."""

    chunk: int
    chunks: int
    world_chunk: int
    step: int
    steps: int
    cached: bool
    seconds: float
    elapsed_s: float
    eta_s: float


@dataclass(frozen=True)
class ChunkDenoised(_Event):
    """A chunk's latents are final; its VAE decode runs now."""

    chunk: int
    chunks: int
    world_chunk: int
    denoise_s: float
    elapsed_s: float
    eta_s: float


@dataclass(frozen=True)
class ChunkDone(_Event):
    """A chunk is decoded and written. ``seconds``: since the previous chunk's file (what a streaming client
    waits); ``denoise_s`` / ``decode_s``: the chunk's own two phases."""

    chunk: int
    chunks: int
    world_chunk: int
    label: str
    seconds: float
    denoise_s: float
    decode_s: float
    elapsed_s: float
    eta_s: float


@dataclass(frozen=True)
class FileReady(_Event):
    """An output file exists. ``kind``: chunk | video | state | last_frame | preview; ``world_chunk`` for a
    chunk's mp4."""

    kind: str
    path: Path
    world_chunk: int | None = None


@dataclass(frozen=True)
class Finished(_Event):
    """The request is done: ``world_chunks`` chunks in the world now; per-chunk timings as in
    :class:`ChunkDone`; ``peak_gpu_gib`` on a GPU."""

    seed: int
    chunks: int
    world_chunks: int
    seconds: float
    chunk_seconds: tuple[float, ...]
    denoise_seconds: tuple[float, ...]
    decode_seconds: tuple[float, ...]
    peak_gpu_gib: float | None


Event = Started | StepDone | ChunkDenoised | ChunkDone | FileReady | Finished
EVENT_NAMES: dict[type, str] = {
    Started: "started",
    StepDone: "step",
    ChunkDenoised: "decoding",
    ChunkDone: "chunk",
    FileReady: "file",
    Finished: "finished",
}

__all__ = ["ChunkDenoised", "ChunkDone", "Event", "FileReady", "Finished", "Started", "StepDone"]


def progress(event: Event, started: Started) -> dict | None:
    """The ``progress`` record of a request that began with ``started``, after ``event`` (None for events that
    do not move it): what the predictor publishes as a coglet metric and the controller page shows. ``phase``
    start | denoise | decode | done; ``chunk``/``chunks`` within the request, ``world_chunk`` in the world,
    ``step``/``steps``, seconds ``elapsed_s`` and ``eta_s`` (the rest of the request), ``seed``."""
    steps = started.steps
    if isinstance(event, Started):
        record = dict(
            phase="start", chunk=1, world_chunk=event.first_world_chunk, step=0, elapsed_s=0.0, eta_s=event.estimate_s
        )
    elif isinstance(event, StepDone):
        record = dict(
            phase="denoise",
            chunk=event.chunk,
            world_chunk=event.world_chunk,
            step=event.step,
            elapsed_s=event.elapsed_s,
            eta_s=event.eta_s,
        )
    elif isinstance(event, ChunkDenoised):
        record = dict(
            phase="decode",
            chunk=event.chunk,
            world_chunk=event.world_chunk,
            step=steps,
            elapsed_s=event.elapsed_s,
            eta_s=event.eta_s,
        )
    elif isinstance(event, Finished):
        record = dict(
            phase="done",
            chunk=event.chunks,
            world_chunk=event.world_chunks,
            step=steps,
            elapsed_s=event.seconds,
            eta_s=0.0,
        )
    else:
        return None
    times = {key: None if record[key] is None else round(record[key], 2) for key in ("elapsed_s", "eta_s")}
    return {**record, **times, "chunks": started.chunks, "steps": steps, "seed": started.seed}
