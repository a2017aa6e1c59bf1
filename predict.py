"""Cog API layer for Hunyuan-GameCraft-1.0: inputs, validation, outputs. The work is in ``gamecraft/``.

``setup()`` builds the engine the environment describes (``gamecraft.serving.config`` lists every
``GAMECRAFT_*`` variable) with ``gamecraft.serving.build.build_service``, the same builder the CLI, the local
server and the benchmarks use. ``predict()`` turns the inputs into one ``GenerationRequest`` and streams
what ``gamecraft.serving.generate.generate`` reports: each file as soon as it exists, progress as coglet
metrics (``progress``: phase, chunk, step, ETA; ``seed``; ``chunks_done``; ``seconds_per_chunk``).

Outputs, in order: each chunk's mp4 as soon as it is decoded, the whole video, then (when asked) the
world state file (``continue_from`` of a later prediction), the last frame (PNG) and the camera-path
preview (PNG). File names: ``gamecraft-<seed>-<id>-chunk001.mp4``, ``…-video.mp4``, ``…-state.safetensors``.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import threading
import traceback
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
            self.config = ServingConfig.from_env()
            self.served = build_service(self.config)
        except ConfigError as err:
            raise RuntimeError(f"{ENV_NAMES.get(err.option, err.option)}={err.value}: {err}") from None
        except ValueError as err:
            raise RuntimeError(str(err)) from None
        self.engine = self.served.engine
        log.info("setup done in %.1fs (weights: %s)", self.served.setup_seconds, self.config.weights)

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
        from gamecraft.pipeline.actions import parse_actions
        from gamecraft.pipeline.presets import resolve_preset
        from gamecraft.pipeline.trajectory import load_trajectory
        from gamecraft.serving.budget import check_budget
        from gamecraft.serving.generate import GenerationRequest, OutputNames

        self._clean_previous_outputs()
        out_dir = Path(tempfile.mkdtemp(prefix="pred-", dir=_ensure_dir(OUTPUT_ROOT)))
        self._last_output_dir = out_dir
        plan = self.served.plan
        try:
            fast = go_fast and plan.go_fast_note is None
            if go_fast and not fast:
                log.warning("%s", plan.go_fast_note)
            elif fast and plan.go_fast_attention_note:
                log.info("%s", plan.go_fast_attention_note)
            chosen = resolve_preset(preset, num_inference_steps, guidance_scale, go_fast=fast)
            plan.check_request(chosen)  # what this GPU's memory cannot run is refused before any GPU work
            chunks_traj = load_trajectory(trajectory) if trajectory is not None else None
            segments = () if chunks_traj is not None else parse_actions(actions, action_speeds)
            request = GenerationRequest(
                prompt=prompt,
                preset=chosen,
                segments=segments,
                trajectory=chunks_traj,
                image=image,
                video=video,
                continue_from=continue_from,
                seed=seed,
                negative_prompt=negative_prompt,
                size=plan.size,
                fps=float(fps),
                return_state=return_state,
                last_frame=return_last_frame,
                camera_preview=camera_preview,
            )
            n_chunks = len(request.chunks())
            estimate = check_budget(
                self.served.costs,
                chosen,
                n_chunks,
                starts_fresh=request.starts_fresh,
                budget_s=self.config.time_budget_s,
                device_name=plan.device_name,
            )
            log.info(
                "request: %d chunk(s), preset %s%s, estimated %.0fs",
                n_chunks,
                chosen.name,
                f" (go_fast: fp8 linears, {self.engine.go_fast_attention_backend} attention)" if fast else "",
                estimate,
            )
            # which kernels ran (go_fast falls back where the GPU or the installed kernels cannot run it)
            self.record_metric("go_fast", fast)
            engine = self.engine
            self.record_metric("attention", engine.go_fast_attention_backend if fast else engine.attention_backend)
            stop = threading.Event()
            # closing(): a cancellation raised here stops generate()'s chunk thread before the cleanup below
            with closing(self.served.generate(request, out_dir, OutputNames(), stop=stop)) as events:
                for event in events:
                    path = self._report(event)
                    if path is not None:
                        yield Path(path)
        except cog.CancelationException:
            shutil.rmtree(out_dir, ignore_errors=True)
            _free_memory()
            raise
        except Exception as err:
            traceback.print_exc()
            shutil.rmtree(out_dir, ignore_errors=True)
            _free_memory()
            if _is_out_of_memory(err):
                raise RuntimeError(
                    "out of GPU memory during this prediction; memory was released and the model "
                    "is ready again. Try fewer chunks per request, the distilled preset, or "
                    "go_fast"
                ) from None
            raise
        finally:
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
        engine = getattr(self, "engine", None)
        return engine.healthy if engine is not None else True

    def _clean_previous_outputs(self) -> None:
        """Outputs of the previous prediction were uploaded when it finished; don't let them pile up."""
        if self._last_output_dir is not None:
            shutil.rmtree(self._last_output_dir, ignore_errors=True)
            self._last_output_dir = None


def _is_out_of_memory(err: BaseException) -> bool:
    import torch

    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


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
