"""A stand-in predictor for the controller page's browser tests: the real predictor's inputs, the real action
parser, and the progress metrics of the predictor contract (docs/ui.md), run by the real coglet.

It exists to drive the page through what the tiny-weights model cannot show on a CPU in a test's time:
exact step timings (the ETA overlay, back-to-back playback), the structured ``progress`` metric before
predict.py records it, and a model worker that dies (``prompt == "crash"``). Each chunk is a real 33-frame
H.264 mp4 (a colour field that moves with the chunk's camera motion), the state file is a real safetensors
file with GameCraft's metadata, so the page's numbering, file names and Keep playing work as with the model.

A prompt containing ``[step 0.4s]`` sleeps that long per denoising step (default 0), ``[decode 2s]`` that long in
each chunk's decode (after its ``decode`` progress event, when no event comes); one containing
``[no progress]`` records only ``chunks_done`` and ``seconds_per_chunk``, as predictors before the contract did.
"""

# ruff: noqa: B008 - Cog declares inputs as Input(...) defaults
from __future__ import annotations

import json
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import cog
import numpy as np
from cog import BasePredictor, Input
from cog import Path as CogPath

STEPS = 4
SIZE = (48, 80)


class Predictor(BasePredictor):
    def setup(self) -> None:
        self.out = Path(tempfile.mkdtemp(prefix="contract-"))

    @cog.streaming
    def predict(
        self,
        image: CogPath | None = Input(default=None),
        prompt: str = Input(default="a test world", max_length=2000),
        actions: str = Input(default='["w"]', regex=r"^\s*\[[\s\S]*\]\s*$", max_length=100000),
        action_speeds: str = Input(default="[0.2]", regex=r"^\s*\[[\s\S]*\]\s*$", max_length=100000),
        preset: str = Input(default="distilled", choices=["distilled", "full"]),
        num_inference_steps: int | None = Input(default=None, ge=1, le=100),
        guidance_scale: float | None = Input(default=None, ge=1.0, le=20.0),
        go_fast: bool = Input(default=False),
        seed: int | None = Input(default=None, ge=0, le=2147483647),
        negative_prompt: str = Input(default="", max_length=2000),
        fps: int = Input(default=25, ge=1, le=60),
        video: CogPath | None = Input(default=None),
        continue_from: CogPath | None = Input(default=None),
        return_state: bool = Input(default=True),
        return_last_frame: bool = Input(default=False),
        camera_preview: bool = Input(default=False),
    ) -> Iterator[CogPath]:
        from safetensors import safe_open
        from safetensors.numpy import load_file, save_file

        from gamecraft.media.video import save_png, write_mp4
        from gamecraft.pipeline.actions import parse_actions

        if prompt == "crash":
            os._exit(3)  # what a CUDA abort or the OOM killer does to the model worker
        segments = parse_actions(actions, action_speeds)
        done, history, pose = 0, [], 0.0
        if continue_from is not None:
            with safe_open(str(continue_from), "np") as handle:
                meta = json.loads((handle.metadata() or {})["gamecraft"])
            done, history = int(meta["chunks_done"]), list(meta["actions"])
            seed = meta["seed"] if seed is None else seed
            load_file(str(continue_from))
        elif image is None and video is None:
            raise ValueError("give exactly one of image, video or continue_from")
        seed = 1234 if seed is None else seed
        quiet = "[no progress]" in prompt
        step_s = float(m.group(1)) if (m := re.search(r"\[step ([\d.]+)s\]", prompt)) else 0.0
        decode_s = float(m.group(1)) if (m := re.search(r"\[decode ([\d.]+)s\]", prompt)) else 0.0
        stem = f"gamecraft-{seed}-{uuid.uuid4().hex[:8]}"
        steps = num_inference_steps or STEPS
        start = time.perf_counter()
        if not quiet:
            self.record_metric("seed", seed)
        frames_all: list[np.ndarray] = []

        def progress(phase: str, k: int, world: int, step: int) -> None:
            if quiet:
                return
            elapsed = time.perf_counter() - start
            work = (k - 1) + step / steps
            eta = elapsed / work * (len(segments) - work) if work > 0 else None
            self.record_metric(
                "progress",
                {
                    "phase": phase,
                    "chunk": k,
                    "chunks": len(segments),
                    "world_chunk": world,
                    "step": step,
                    "steps": steps,
                    "elapsed_s": round(elapsed, 3),
                    "eta_s": eta,
                    "seed": seed,
                },
            )

        for k, segment in enumerate(segments, 1):
            world = done + k
            progress("start", k, world, 0)
            for step in range(1, steps + 1):
                time.sleep(step_s)
                progress("denoise", k, world, step)
            progress("decode", k, world, steps)
            time.sleep(decode_s)
            pose += segment.forward + segment.yaw_degrees / 30
            frames_all.append(_frames(world, pose))
            history.append(segment.describe())
            path = write_mp4(frames_all[-1], self.out / f"{stem}-chunk{world:03d}.mp4", fps=fps)
            self.record_metric("chunks_done", k)
            self.record_metric("seconds_per_chunk", round(time.perf_counter() - start, 3), mode="append")
            yield CogPath(path)
        progress("done", len(segments), done + len(segments), steps)
        yield CogPath(write_mp4(np.concatenate(frames_all), self.out / f"{stem}-video.mp4", fps=fps))
        if return_state:
            meta = {
                "format": "gamecraft-world-state",
                "format_version": 1,
                "seed": seed,
                "chunks_done": done + len(segments),
                "prompt": prompt,
                "actions": history,
            }
            state = self.out / f"{stem}-state.safetensors"
            save_file(
                {"last_latents": np.zeros((1, 16, 1, 2, 2), np.float32)},
                str(state),
                metadata={"gamecraft": json.dumps(meta)},
            )
            yield CogPath(state)
        if return_last_frame:
            yield CogPath(save_png(frames_all[-1][-1], self.out / f"{stem}-last-frame.png"))
        if camera_preview:
            yield CogPath(save_png(frames_all[0][0], self.out / f"{stem}-camera.png"))


def _frames(world: int, pose: float) -> np.ndarray:
    """[33, H, W, 3] uint8: stripes that drift with the camera, a hue per world chunk."""
    t = np.linspace(0, 1, 33)[:, None, None]
    xs = np.arange(SIZE[1])[None, None, :]
    wave = (np.sin(xs / 6 + pose * 3 + t * 2) + 1) / 2 * np.ones((1, SIZE[0], 1))
    frames = np.stack([wave * 0.9, np.full_like(wave, (world * 0.37) % 1), 1 - wave], axis=-1)
    return (frames * 255).astype(np.uint8)
