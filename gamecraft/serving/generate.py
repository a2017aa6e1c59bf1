"""One generation request end to end: start → chunks → files, reported as typed events.

:func:`generate` yields :mod:`gamecraft.serving.events` in order; each output file is announced
(:class:`FileReady`) the moment it exists:

1. one mp4 per chunk (33 frames), as soon as the chunk is decoded;
2. the whole video (all chunks of this request, appended to one encoder as they come);
3. the world state (``.safetensors``; continue the world later with it) when asked;
4. the last frame as PNG, and the camera-path preview, when asked.

A request starts from exactly one of: an image, a video (its last 33 frames), or a saved state; it is
checked once, when the :class:`GenerationRequest` is made. The chunks are generated on a background thread
one ahead of the writes (:mod:`gamecraft.serving.chunks_ahead`), so the GPUs work on chunk k+1 while chunk
k is encoded. A caller stops the work by closing the iterator (``contextlib.closing``) or by setting
``stop``: the chunk in progress ends before its next denoising step, and a set ``stop`` ends the iterator
with :class:`GenerationStopped` (the same with or without the thread).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gamecraft.engine import Engine
from gamecraft.media.image import preprocess_frames, preprocess_image
from gamecraft.media.preview import save_preview
from gamecraft.media.video import VideoWriter, last_frames_for_start, save_png, write_mp4
from gamecraft.pipeline.actions import Segment
from gamecraft.pipeline.camera import ChunkPoses, chunk_poses
from gamecraft.pipeline.presets import Preset
from gamecraft.pipeline.sampling import GenerationStopped
from gamecraft.pipeline.session import ChunkResult, WorldSession, encode_start_image, encode_start_video
from gamecraft.pipeline.state import load_state, save_state
from gamecraft.specs.errors import RequestError
from gamecraft.specs.geometry import DEFAULT_SIZE, FPS, MAX_SEED, latent_size

from .budget import PassCosts, denoise_seconds
from .chunks_ahead import Step, chunks_ahead, step_recorder
from .events import ChunkDenoised, ChunkDone, Event, FileReady, Finished, Started, StepDone

__all__ = ["GenerationRequest", "GenerationStopped", "OutputNames", "generate", "start_session"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationRequest:
    """Everything one request asks for, checked when made (:class:`RequestError` with a human message).

    Exactly one of ``image``/``video``/``continue_from``; exactly one of ``segments`` (parsed actions)
    or ``trajectory`` (custom camera chunks)."""

    prompt: str
    preset: Preset
    segments: Sequence[Segment] = ()
    trajectory: Sequence[ChunkPoses] | None = None
    image: Path | None = None
    video: Path | None = None
    continue_from: Path | None = None
    seed: int | None = None
    negative_prompt: str = ""
    size: tuple[int, int] = DEFAULT_SIZE
    fps: float = float(FPS)
    return_state: bool = True
    last_frame: bool = False
    camera_preview: bool = False

    def __post_init__(self) -> None:
        starts = [
            name
            for name, value in (("image", self.image), ("video", self.video), ("continue_from", self.continue_from))
            if value is not None
        ]
        if len(starts) != 1:
            raise RequestError(
                "give exactly one of image, video or continue_from"
                + (f" (got {', '.join(starts)})" if starts else " (got none)")
            )
        if (self.trajectory is not None) == bool(self.segments):
            raise RequestError("give either actions or a trajectory (exactly one)")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise RequestError(f"seed must be between 0 and {MAX_SEED}, got {self.seed}")
        if not 1 <= self.fps <= 120:
            raise RequestError(f"fps must be between 1 and 120, got {self.fps:g}")
        latent_size(*self.size)

    @property
    def starts_fresh(self) -> bool:
        """Whether the first chunk is a 10-latent-frame chunk (a start image)."""
        return self.image is not None

    def chunks(self) -> list[tuple[ChunkPoses, str]]:
        """``(poses, label)`` per chunk to generate."""
        if self.trajectory is not None:
            return [(c, f"trajectory chunk {i + 1}") for i, c in enumerate(self.trajectory)]
        return [(chunk_poses(s), s.describe()) for s in self.segments]


@dataclass(frozen=True)
class OutputNames:
    """File names of one request's outputs: ``<prefix>-<seed>-<request_id>-chunk001.mp4``, ``…-video.mp4``,
    ``…-state.safetensors``, ``…-last-frame.png``, ``…-camera.png`` (chunk numbers count the world's chunks)."""

    prefix: str = "gamecraft"
    request_id: str = field(default_factory=lambda: secrets.token_hex(4))

    def stem(self, seed: int) -> str:
        return f"{self.prefix}-{seed}-{self.request_id}"


def start_session(engine: Engine, request: GenerationRequest) -> WorldSession:
    """Encode the start (image, video or state) and the prompt into a new :class:`WorldSession`."""
    height, width = request.size
    if request.continue_from is not None:
        state = load_state(request.continue_from, height, width)
        seed = state.seed if request.seed is None else request.seed
        prompt = request.prompt or state.prompt
        return WorldSession.start(
            engine,
            request.preset,
            prompt,
            seed,
            height,
            width,
            history=state.last_latents,
            negative_prompt=request.negative_prompt,
            chunks_done=state.chunks_done,
            pose=state.pose,
            actions=state.actions,
        )
    seed = secrets.randbelow(MAX_SEED + 1) if request.seed is None else request.seed
    if request.image is not None:
        history = encode_start_image(engine.vae, preprocess_image(request.image, request.size), seed)
    else:
        history = encode_start_video(
            engine.vae, preprocess_frames(last_frames_for_start(request.video), request.size), seed
        )
    return WorldSession.start(
        engine,
        request.preset,
        request.prompt,
        seed,
        height,
        width,
        history=history,
        negative_prompt=request.negative_prompt,
    )


class _Clock:
    """Elapsed time and the ETA of the rest of a request, from what has run so far: seconds per denoising
    step over the last chunk's worth of steps and per decode (measured, else the cost table's later-chunk
    figures; a fresh request's first chunk is shorter, so the first estimate errs long)."""

    def __init__(self, chunks: int, steps: int, costs: PassCosts | None, preset: Preset):
        self.start = time.perf_counter()
        self.chunks, self.steps = chunks, steps
        self.step_s: list[float] = []
        self.decode_s: list[float] = []
        self._table_step = denoise_seconds(costs, preset, first=False) / max(steps, 1) if costs else 0.0
        self._table_decode = costs.decode_s if costs else 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def eta(self, steps_done: int, decodes_done: int) -> float:
        """Seconds left once ``steps_done`` steps (over all chunks) and ``decodes_done`` decodes are done."""
        recent = self.step_s[-self.steps :]
        per_step = sum(recent) / len(recent) if recent else self._table_step
        per_decode = sum(self.decode_s) / len(self.decode_s) if self.decode_s else self._table_decode
        steps_left = self.chunks * self.steps - steps_done
        return max(0.0, steps_left * per_step + (self.chunks - decodes_done) * per_decode)


def generate(
    engine: Engine,
    request: GenerationRequest,
    out_dir: Path,
    names: OutputNames | None = None,
    costs: PassCosts | None = None,
    overlap_writes: bool = True,
    stop: threading.Event | None = None,
) -> Iterator[Event]:
    """Run ``request``, writing its files into ``out_dir``; yields :mod:`~gamecraft.serving.events`.

    ``costs``: the warm-up's cost table, for the ETA before the first step is timed. ``overlap_writes``:
    generate the next chunk on a background thread while this one's mp4s are written (same outputs).

    Stopping, one path for both settings of ``overlap_writes``: once ``stop`` is set (from any thread) while
    chunks remain, no further event comes; the chunk in progress ends before its next denoising step and
    the iterator raises :class:`GenerationStopped` (files already announced stay; the whole video is not
    written). A stop after the last chunk's file changes nothing.
    Closing the iterator (``contextlib.closing``; a cancellation) stops the same way. An engine runs one
    generation at a time: a second one while this runs raises :class:`~gamecraft.engine.EngineBusy`, and
    one on a failed engine :class:`~gamecraft.engine.EngineFailed`.
    """
    stop = stop or threading.Event()
    with engine.exclusive("a generation"):
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        chunks = request.chunks()
        session = start_session(engine, request)
        files = _Files(request, out_dir, (names or OutputNames()).stem(session.state.seed))
        progress = _Progress(len(chunks), session.state.chunks_done + 1, request.preset, costs)
        yield progress.started(session.state.seed, request.size)
        if overlap_writes:
            items = chunks_ahead(session, chunks, stop=stop, steps=True)
        else:
            items = _in_line(session, chunks, stop)
        with files.video() as video, closing(items):
            for item in _until_stopped(items, stop, lambda: f"{progress.chunks_done} of {len(chunks)} chunk(s)"):
                if isinstance(item, Step):
                    yield from progress.step(item)
                    continue
                path = files.chunk(item)
                yield progress.chunk_done(item)
                yield FileReady("chunk", path, item.index + 1)
                video.append(item.frames)
        yield FileReady("video", video.path)
        yield from files.rest(session.state, chunks, progress.last_frame)
        yield progress.finished(session.state.chunks_done, _peak_gib(engine))


class _Files:
    """The files of one request (names from ``stem``), each written when its data exists."""

    def __init__(self, request: GenerationRequest, out_dir: Path, stem: str):
        self.request, self.out_dir, self.stem = request, out_dir, stem

    def video(self) -> VideoWriter:
        """The whole video: every chunk appended as it comes; removed if the request does not finish."""
        return VideoWriter(self.out_dir / f"{self.stem}-video.mp4", fps=self.request.fps)

    def chunk(self, result: ChunkResult) -> Path:
        """The chunk's own mp4 (world chunk numbers). Written before its copy in the whole video, so the
        time to each chunk's file does not include a second H.264 encode."""
        name = f"{self.stem}-chunk{result.index + 1:03d}.mp4"
        return write_mp4(result.frames, self.out_dir / name, fps=self.request.fps)

    def rest(self, state, chunks: Sequence[tuple[ChunkPoses, str]], last_frame) -> Iterator[FileReady]:
        """The files a request asks for after its chunks: world state, last frame, camera preview."""
        request, out = self.request, self.out_dir
        if request.return_state:
            yield FileReady("state", save_state(state, out / f"{self.stem}-state.safetensors"))
        if request.last_frame and last_frame is not None:
            yield FileReady("last_frame", save_png(last_frame, out / f"{self.stem}-last-frame.png"))
        if request.camera_preview:
            save_preview(out / f"{self.stem}-camera.png", [p for p, _ in chunks], [label for _, label in chunks])
            yield FileReady("preview", out / f"{self.stem}-camera.png")


class _Progress:
    """The events, log lines and timings of one request's progress (:class:`_Clock` for the ETA)."""

    def __init__(self, chunks: int, first_world: int, preset: Preset, costs: PassCosts | None):
        self.chunks, self.first_world, self.preset = chunks, first_world, preset
        self.clock = _Clock(chunks, preset.num_inference_steps, costs, preset)
        self.estimate = self.clock.eta(0, 0) if costs is not None else None
        self.steps_done = self.chunks_done = 0
        self.timings: dict[str, list[float]] = {"chunk": [], "denoise": [], "decode": []}
        self.last_file = time.perf_counter()
        self.last_frame = None
        self.seed = 0

    def started(self, seed: int, size: tuple[int, int]) -> Started:
        self.seed, preset = seed, self.preset
        log.info("generating %d chunk(s) with preset %s, seed %d, %dx%d", self.chunks, preset.name, seed, *size)
        steps = preset.num_inference_steps
        return Started(seed, self.chunks, self.first_world, preset.name, steps, *size, self.estimate)

    def step(self, item: Step) -> Iterator[Event]:
        """:class:`StepDone` for ``item``, and :class:`ChunkDenoised` after a chunk's last step."""
        position, clock = item.position, self.clock
        self.steps_done += 1
        clock.step_s.append(item.seconds)
        eta = clock.eta(self.steps_done, position)
        world = self.first_world + position
        event = StepDone(
            position + 1,
            self.chunks,
            world,
            item.index + 1,
            item.total,
            item.cached,
            item.seconds,
            clock.elapsed(),
            eta,
        )
        cached = " (cached)" if item.cached else ""
        log.info("chunk %d step %d/%d%s: %.2fs; ETA %.0fs", world, event.step, event.steps, cached, item.seconds, eta)
        yield event
        if item.index + 1 == item.total:
            denoise = sum(clock.step_s[-item.total :])
            yield ChunkDenoised(position + 1, self.chunks, world, denoise, clock.elapsed(), eta)

    def chunk_done(self, result: ChunkResult) -> ChunkDone:
        """The chunk's file is written: its timings (``seconds`` since the previous chunk's file)."""
        self.chunks_done += 1
        n, clock = self.chunks_done, self.clock
        self.last_frame = result.frames[-1]
        now = time.perf_counter()
        seconds, self.last_file = now - self.last_file, now
        clock.decode_s.append(result.seconds_decode)
        for key, value in (("chunk", seconds), ("denoise", result.seconds_denoise), ("decode", result.seconds_decode)):
            self.timings[key].append(value)
        eta = clock.eta(max(self.steps_done, n * self.preset.num_inference_steps), n)
        done = ChunkDone(
            n,
            self.chunks,
            result.index + 1,
            result.label,
            seconds,
            result.seconds_denoise,
            result.seconds_decode,
            clock.elapsed(),
            eta,
        )
        log.info("chunk %d/%d done in %.1fs (%s); ETA %.0fs", n, self.chunks, seconds, result.label, eta)
        return done

    def finished(self, world_chunks: int, peak_gib: float | None) -> Finished:
        elapsed = self.clock.elapsed()
        log.info(
            "generated %d chunk(s) (world chunks %d-%d) in %.1fs%s",
            self.chunks,
            self.first_world,
            world_chunks,
            elapsed,
            f"; peak GPU memory {peak_gib:.1f} GiB" if peak_gib else "",
        )
        timings = self.timings
        return Finished(
            self.seed,
            self.chunks,
            world_chunks,
            elapsed,
            tuple(timings["chunk"]),
            tuple(timings["denoise"]),
            tuple(timings["decode"]),
            peak_gib,
        )


def _peak_gib(engine: Engine) -> float | None:
    """Peak GPU memory of the request's device in GiB (None off CUDA)."""
    if engine.device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(engine.device) / 2**30


def _until_stopped(items: Iterator, stop: threading.Event, done: Callable[[], str]) -> Iterator:
    """``items`` until ``stop`` is set; then :class:`GenerationStopped` ("stopped after ``done()``"), also
    when the chunks' own check between steps noticed the stop first (on either path)."""
    try:
        for item in items:
            if stop.is_set():
                break
            yield item
        else:
            return
    except GenerationStopped:
        pass
    raise GenerationStopped(f"stopped after {done()}")


def _in_line(
    session: WorldSession, chunks: Sequence[tuple[ChunkPoses, str]], stop: threading.Event
) -> Iterator[Step | ChunkResult]:
    """:func:`chunks_ahead`'s items without a thread: each chunk's steps, then the chunk."""
    for position, (poses, label) in enumerate(chunks):
        steps: list[Step] = []
        result = session.generate_chunk(
            poses, label, stop=stop, on_step=step_recorder(position, session.engine.device, steps.append)
        )
        yield from steps
        yield result
