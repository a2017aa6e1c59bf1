"""One generation request end to end: start → chunks → files. Shared by the CLI and the Cog predictor.

:func:`generate` yields each output file the moment it exists, in this order:

1. one mp4 per chunk (33 frames), as soon as the chunk is decoded;
2. the whole video (all chunks of this request, appended to one encoder as they come);
3. the world state (``.safetensors``; continue the world later with it) when asked;
4. the last frame as PNG, and the camera-path preview, when asked.

A request starts from exactly one of: an image, a video (its last 33 frames), or a saved state.
The chunks are generated on a background thread one ahead of the writes (:mod:`gamecraft.serving.chunks_ahead`),
so the GPUs work on chunk k+1 while chunk k is encoded.
"""

from __future__ import annotations

import logging
import secrets
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from gamecraft.pipeline.actions import Segment
from gamecraft.pipeline.camera import ChunkPoses, chunk_poses
from gamecraft.serving.chunks_ahead import chunks_ahead
from gamecraft.media.image import preprocess_frames, preprocess_image
from gamecraft.media.video import VideoWriter, last_frames_for_start, save_png, write_mp4
from gamecraft.pipeline.presets import Preset
from gamecraft.media.preview import save_preview
from gamecraft.pipeline.session import Engine, WorldSession, encode_start_image, encode_start_video
from gamecraft.specs.geometry import latent_size
from gamecraft.pipeline.state import load_state, save_state
from gamecraft.specs.geometry import DEFAULT_SIZE, MAX_SEED

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class GenerationRequest:
    """Everything one request asks for. Exactly one of ``image``/``video``/``continue_from``;
    exactly one of ``segments`` (parsed actions) or ``trajectory`` (custom camera chunks)."""

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
    fps: float = 25.0
    return_state: bool = True
    last_frame: bool = False
    camera_preview: bool = False

    def chunks(self) -> list[tuple[ChunkPoses, str]]:
        """``(poses, label)`` per chunk to generate."""
        if self.trajectory is not None:
            return [(c, f"trajectory chunk {i + 1}") for i, c in enumerate(self.trajectory)]
        return [(chunk_poses(s), s.describe()) for s in self.segments]


@dataclass(frozen=True)
class OutputFile:
    kind: str  # "chunk" | "video" | "state" | "last_frame" | "preview"
    path: Path
    chunk: int | None = None


@dataclass
class GenerationReport:
    """Filled while :func:`generate` runs: the seed used and per-chunk timings (``chunk_seconds``: since
    the previous chunk's file; ``denoise_seconds`` / ``decode_seconds``: the chunk's own two phases)."""

    seed: int | None = None
    chunk_seconds: list[float] = field(default_factory=list)
    denoise_seconds: list[float] = field(default_factory=list)
    decode_seconds: list[float] = field(default_factory=list)


def validate_request(request: GenerationRequest) -> None:
    """Cheap checks before any model work; ``ValueError`` with a human message."""
    starts = [name for name, value in (("image", request.image), ("video", request.video),
                                       ("continue_from", request.continue_from)) if value is not None]
    if len(starts) != 1:
        raise ValueError("give exactly one of image, video or continue_from"
                         + (f" (got {', '.join(starts)})" if starts else " (got none)"))
    if (request.trajectory is not None) == bool(request.segments):
        raise ValueError("give either actions or a trajectory (exactly one)")
    if request.seed is not None and not 0 <= request.seed <= MAX_SEED:
        raise ValueError(f"seed must be between 0 and {MAX_SEED}, got {request.seed}")
    if not 1 <= request.fps <= 120:
        raise ValueError(f"fps must be between 1 and 120, got {request.fps:g}")
    latent_size(*request.size)


def start_session(engine: Engine, request: GenerationRequest) -> WorldSession:
    """Encode the start (image, video or state) and the prompt into a new :class:`WorldSession`."""
    height, width = request.size
    if request.continue_from is not None:
        state = load_state(request.continue_from, height, width)
        seed = state.seed if request.seed is None else request.seed
        prompt = request.prompt or state.prompt
        return WorldSession.start(engine, request.preset, prompt, seed, height, width, history=state.last_latents,
                                  ref_latents=state.ref_latents, negative_prompt=request.negative_prompt,
                                  chunks_done=state.chunks_done, pose=state.pose, actions=state.actions)
    seed = secrets.randbelow(MAX_SEED + 1) if request.seed is None else request.seed
    if request.image is not None:
        history = encode_start_image(engine.vae, preprocess_image(request.image, request.size), seed)
        ref = history
    else:
        frames = preprocess_frames(last_frames_for_start(request.video), request.size)
        history, ref = encode_start_video(engine.vae, frames, frames[:, :, :1], seed)
    return WorldSession.start(engine, request.preset, request.prompt, seed, height, width, history=history,
                              ref_latents=ref, negative_prompt=request.negative_prompt)


def generate(engine: Engine, request: GenerationRequest, out_dir: Path, stem: str,
             report: GenerationReport | None = None, overlap_writes: bool = True) -> Iterator[OutputFile]:
    """Run ``request``, writing files named ``<stem>-…`` into ``out_dir``; yields each as it is ready.

    ``stem`` may contain ``{seed}``, replaced by the seed actually used. ``overlap_writes``: generate
    the next chunk on a background thread while this one's mp4s are written (:mod:`gamecraft.serving.chunks_ahead`;
    same outputs). Close the iterator (``contextlib.closing``) when not exhausting it, so that the
    thread is stopped at once.
    """
    validate_request(request)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = report if report is not None else GenerationReport()
    chunks = request.chunks()
    session = start_session(engine, request)
    report.seed = session.state.seed
    stem = stem.format(seed=session.state.seed)
    first_chunk = session.state.chunks_done
    log.info("generating %d chunk(s) with preset %s, seed %d, %dx%d", len(chunks), request.preset.name,
             session.state.seed, *request.size)
    start = last = time.perf_counter()
    last_frame = None
    results = chunks_ahead(session, chunks) if overlap_writes else (session.generate_chunk(*c) for c in chunks)
    with VideoWriter(out_dir / f"{stem}-video.mp4", fps=request.fps) as full, closing(results):
        for n, result in enumerate(results):
            frames = result.frames
            report.denoise_seconds.append(result.seconds_denoise)
            report.decode_seconds.append(result.seconds_decode)
            full.append(frames)
            path = write_mp4(frames, out_dir / f"{stem}-chunk{result.index + 1:03d}.mp4", fps=request.fps)
            last_frame = frames[-1]
            now = time.perf_counter()
            seconds, last = now - last, now  # since the previous chunk's file: what a streaming client waits
            report.chunk_seconds.append(seconds)
            eta = (now - start) / (n + 1) * (len(chunks) - n - 1)
            log.info("chunk %d/%d done in %.1fs (%s); ETA %.0fs", n + 1, len(chunks), seconds, result.label, eta)
            yield OutputFile("chunk", path, result.index)
    yield OutputFile("video", full.path)
    if request.return_state:
        yield OutputFile("state", save_state(session.state, out_dir / f"{stem}-state.safetensors"))
    if request.last_frame and last_frame is not None:
        yield OutputFile("last_frame", save_png(last_frame, out_dir / f"{stem}-last-frame.png"))
    if request.camera_preview:
        labels = [label for _, label in chunks]
        save_preview(out_dir / f"{stem}-camera.png", [p for p, _ in chunks], labels)
        yield OutputFile("preview", out_dir / f"{stem}-camera.png")
    peak = ""
    if engine.device.type == "cuda":
        import torch

        peak = f"; peak GPU memory {torch.cuda.max_memory_allocated(engine.device) / 2**30:.1f} GiB"
    log.info("generated %d chunk(s) (world chunks %d-%d) in %.1fs%s", len(chunks), first_chunk + 1,
             session.state.chunks_done, time.perf_counter() - start, peak)
