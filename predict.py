"""Cog API layer for Hunyuan-GameCraft-1.0: inputs, validation, outputs. The work is in ``gamecraft/``.

``setup()`` builds the engine the environment describes (``gamecraft.serving.config`` lists every
``GAMECRAFT_*`` variable) with ``gamecraft.serving.build.build_service``, the same builder the CLI, the local
server and the benchmarks use. ``predict()`` maps its inputs to ``RequestInputs``, and
``gamecraft.serving.request.prepare_request`` (the CLI's path too) validates them into one
``GenerationRequest`` with its time estimate; ``predict()`` then streams what the engine's ``generate``
reports: each file as soon as it exists, progress as coglet metrics (``progress``: phase, chunk, step, ETA;
``seed``; ``chunks_done``; ``seconds_per_chunk``; which kernels run: ``go_fast``, ``attention``). A request
the user can fix fails with one line (``RequestError``), anything else with its traceback in the logs.

Outputs, in order: each chunk's mp4 as soon as it is decoded, the whole video, then (when asked) the
world state file (``continue_from`` of a later prediction), the last frame (PNG) and the camera-path
preview (PNG). File names: ``gamecraft-<seed>-<id>-chunk001.mp4``, ``…-video.mp4``, ``…-state.safetensors``.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import closing
from typing import Optional

import cog
from cog import BasePredictor, Input, Path

log = logging.getLogger("gamecraft.predict")

OUTPUT_ROOT = Path(tempfile.gettempdir()) / "gamecraft-outputs"
# How the environment names each ServingConfig field (for setup errors about one of them).
ENV_NAMES = {"gpus": "GAMECRAFT_GPUS", "attention": "GAMECRAFT_ATTENTION", "weights": "GAMECRAFT_WEIGHTS"}


def _configure_logging() -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_gamecraft", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._gamecraft = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.INFO)


class Predictor(BasePredictor):
    def setup(self) -> None:
        _configure_logging()
        from gamecraft.serving.build import build_service
        from gamecraft.serving.config import ConfigError, ServingConfig

        self._last_output_dir: Path | None = None
        try:
            self.service = build_service(ServingConfig.from_env())
        except ValueError as err:  # one line for SETUP_FAILED; the cause, with its traceback, in the log
            log.exception("setup failed")
            where = f"{ENV_NAMES.get(err.option, err.option)}={err.value}: " if isinstance(err, ConfigError) else ""
            raise RuntimeError(f"{where}{err}") from None
        log.info("setup done in %.1fs (weights: %s)", self.service.setup_seconds, self.service.config.weights)

    @cog.streaming
    def predict(
        self,
        image: Optional[Path] = Input(
            description="Start image (any common format; cover-resized and centre-cropped "
            "to 704×1216). Give exactly one of image, video, continue_from.",
            default=None,
        ),
        prompt: str = Input(
            description="What the world looks like.",
            default="A charming medieval village with cobblestone streets, thatched-roof houses.",
            max_length=2000,
        ),
        actions: str = Input(
            description="JSON list of actions, one per 33-frame chunk: w/a/s/d (move), left_rot/right_rot/up_rot/"
            'down_rot (look), idle, aliases like "forward"/"look_left", or combined like "w+left_rot".',
            default='["w", "s", "d", "a"]',
            regex=r"^\s*\[[\s\S]*\]\s*$",
            max_length=100000,
        ),
        action_speeds: str = Input(
            description="JSON list of speeds, one per action: translation units (0–3, try 0.2–1) for moves, degrees "
            "per chunk (0–90, try 5–45) for looks; a combined action takes a list like [0.4, 20].",
            default="[0.2, 0.2, 0.2, 0.2]",
            regex=r"^\s*\[[\s\S]*\]\s*$",
            max_length=100000,
        ),
        preset: str = Input(
            description="distilled: 8 steps, guidance 1 (fast). full: 50 steps, guidance 2, step "
            "cache (slow, the standard model).",
            default="distilled",
            choices=["distilled", "full"],
        ),
        num_inference_steps: Optional[int] = Input(
            description="Override the preset's steps.", default=None, ge=1, le=100
        ),
        guidance_scale: Optional[float] = Input(
            description="Override the preset's guidance (1 = no guidance).", default=None, ge=1.0, le=20.0
        ),
        go_fast: bool = Input(
            description="fp8 block linears (slightly different videos): a later chunk ≈ 5 % faster on an H100 with "
            "this image, which ships without SageAttention; ≈ 17 % where an operator installed SageAttention2 "
            "(8-bit attention, Hopper only). Runs exact where the GPU has no fp8 (A100). The logs and the "
            "attention metric say which kernels ran.",
            default=False,
        ),
        seed: Optional[int] = Input(
            description="Random seed; blank = random (the seed used is logged and stored in the state file).",
            default=None,
            ge=0,
            le=2147483647,
        ),
        negative_prompt: str = Input(
            description="Unconditional prompt for guidance (the official pipeline always "
            "uses an empty one; only matters when guidance > 1).",
            default="",
            max_length=2000,
        ),
        fps: int = Input(
            description="Frame rate of the output videos (the model's cadence is 25).", default=25, ge=1, le=60
        ),
        video: Optional[Path] = Input(
            description="Start from a video instead (its last 33 frames; at least 33).", default=None
        ),
        continue_from: Optional[Path] = Input(
            description="Continue a world: the state file of an earlier prediction.", default=None
        ),
        trajectory: Optional[Path] = Input(
            description="Custom camera path instead of actions: RealEstate10K-style "
            "text or JSON 4×4 camera-to-world matrices, 33 per chunk.",
            default=None,
        ),
        return_state: bool = Input(description="Also return the world state file to continue later.", default=True),
        return_last_frame: bool = Input(description="Also return the last frame as PNG.", default=False),
        camera_preview: bool = Input(description="Also return a top-down PNG of the camera path.", default=False),
    ) -> Iterator[Path]:
        from gamecraft.serving.generate import OutputNames
        from gamecraft.serving.request import RequestInputs, final_error, prepare_request

        out_dir = self._new_output_dir()
        inputs = RequestInputs(
            prompt=prompt,
            actions=actions,
            action_speeds=action_speeds,
            preset=preset,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            go_fast=go_fast,
            seed=seed,
            negative_prompt=negative_prompt,
            fps=fps,
            image=image,
            video=video,
            continue_from=continue_from,
            trajectory=trajectory,
            return_state=return_state,
            return_last_frame=return_last_frame,
            camera_preview=camera_preview,
        )
        error = None
        try:
            prepared = prepare_request(self.service, inputs)
            prepared.log(log)
            self.record_metric("go_fast", prepared.go_fast)  # which kernels run (go_fast falls back where it can't)
            self.record_metric("attention", prepared.attention)
            # closing(): a cancellation raised here stops generate()'s chunk thread before the cleanup below
            with closing(self.service.generate(prepared.request, out_dir, OutputNames())) as events:
                for event in events:
                    path = self._report(event)
                    if path is not None:
                        yield Path(path)
        except cog.CancelationException:
            _discard(out_dir)
            raise
        except Exception as err:  # noqa: BLE001 - every failure ends in one clean error, raised below
            error = final_error(err, self.healthcheck())
        if error is not None:  # out of the except block: the failed work's frames, and their memory, are gone
            _discard(out_dir)
            raise error
        _trim_host_memory()

    def _report(self, event) -> str | None:
        """Metrics for ``event`` (coglet sends each as an SSE ``metric`` event and in webhooks); the path of
        a file event."""
        from gamecraft.serving import events as ev

        if isinstance(event, ev.FileReady):
            return str(event.path)
        if isinstance(event, ev.Started):
            self._started = event
            self.record_metric("seed", event.seed)
        elif isinstance(event, ev.ChunkDone):
            self.record_metric("chunks_done", event.chunk)
            self.record_metric("seconds_per_chunk", round(event.seconds, 3), mode="append")
        elif isinstance(event, ev.Finished):
            log.info("seed %s", event.seed)
        record = ev.progress(event, self._started)
        if record is not None:
            self.record_metric("progress", record)
        return None

    def healthcheck(self) -> bool:
        """False once a multi-GPU worker has died (coglet then reports UNHEALTHY)."""
        service = getattr(self, "service", None)
        return service.engine.healthy if service is not None else True

    def _new_output_dir(self) -> Path:
        """A fresh directory for this prediction's files; the previous prediction's were uploaded when it
        finished, so they go (outputs do not pile up)."""
        if self._last_output_dir is not None:
            shutil.rmtree(self._last_output_dir, ignore_errors=True)
        self._last_output_dir = Path(tempfile.mkdtemp(prefix="pred-", dir=_ensure_dir(OUTPUT_ROOT)))
        return self._last_output_dir


def _discard(out_dir: Path) -> None:
    """After a failed or cancelled prediction: its files, its GPU memory, the host memory it freed."""
    shutil.rmtree(out_dir, ignore_errors=True)
    _free_memory()
    _trim_host_memory()


def _free_memory() -> None:
    """Drop what a failed or cancelled prediction left on the GPU (activations, cached blocks)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _trim_host_memory() -> None:
    """Hand the host memory a finished prediction freed back to the OS (glibc keeps freed pages of its
    arenas otherwise, so a long-running server's RSS drifts up and down by ~100 MB between predictions)."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
