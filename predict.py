"""Cog API layer for Hunyuan-GameCraft-1.0: inputs, validation, outputs. The work is in ``gamecraft/``.

Environment (read here only): ``GAMECRAFT_WEIGHTS`` or ``COG_WEIGHTS`` — weights directory (default
``./weights``; ``tiny`` = tiny random weights for CPU smoke runs; ``random`` = full-size random weights
built on the GPU, for benchmarks and GPU smoke runs without the real weights — outputs are noise), ``GAMECRAFT_PRELOAD`` — presets whose
transformer loads in ``setup()`` (default ``distilled``; the other loads on first use),
``GAMECRAFT_TIME_BUDGET_S`` — refuse requests estimated to take longer (default 1680 s),
``HF_TOKEN`` — for downloading the gated weights, ``GAMECRAFT_DOWNLOAD`` — ``0`` disables downloading,
``GAMECRAFT_TINY_SIZE`` — ``HxW`` of tiny smoke runs (default 128x224), ``GAMECRAFT_KEEP_BOTH`` — ``1``
keeps both transformers on the GPU (needs > 80 GB; default: the unused one waits in pinned host RAM),
``GAMECRAFT_COMPILE`` — ``0`` runs the transformer and VAE decoder eagerly (default on a GPU: compiled
blocks and full-tile VAE decoder, warmed up here),
``GAMECRAFT_ATTENTION`` — attention kernel (default ``auto``: FlashAttention-3 when ``fa3-fwd`` imports, else
cuDNN SDPA), ``GAMECRAFT_GPUS`` — GPUs to split every pass over (default: all visible; ``1`` = one GPU; with
``tiny`` weights on a CPU, that many gloo processes, for tests). Multi-GPU runs keep NCCL's NVLink multicast off.

Outputs, in order: each chunk's mp4 as soon as it is decoded, the whole video, then (when asked) the
world state file (``continue_from`` of a later prediction), the last frame (PNG) and the camera-path
preview (PNG). File names: ``gamecraft-<seed>-<id>-chunk001.mp4``, ``…-video.mp4``, ``…-state.safetensors``.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
import uuid
from contextlib import closing
from typing import Iterator, Optional

import cog
from cog import BasePredictor, Input, Path

log = logging.getLogger("gamecraft.predict")

OUTPUT_ROOT = Path(tempfile.gettempdir()) / "gamecraft-outputs"


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
        weights = os.environ.get("GAMECRAFT_WEIGHTS") or os.environ.get("COG_WEIGHTS") or "weights"
        if weights not in ("tiny", "random") and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
            # Compiled kernels next to the safetensors cache: a restart with the same weights volume
            # skips most of the compilation warm-up (set before torch's compiler reads its config).
            compile_cache = Path(weights).resolve() / ".safetensors-cache" / "inductor"
            try:
                compile_cache.mkdir(parents=True, exist_ok=True)
                if os.access(compile_cache, os.W_OK):
                    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(compile_cache)
            except OSError:  # read-only weights: torch's default (temporary) cache is used
                pass
        from gamecraft.serving.budget import DEFAULT_BUDGET_S, measure_costs
        from gamecraft.pipeline.presets import PRESETS

        start = time.perf_counter()
        names = [p.strip() for p in os.environ.get("GAMECRAFT_PRELOAD", "distilled").split(",") if p.strip()]
        unknown = [n for n in names if n not in PRESETS]
        if unknown:
            raise RuntimeError(f"GAMECRAFT_PRELOAD names unknown presets {unknown}; expected {', '.join(PRESETS)}")
        preload = tuple(dict.fromkeys(PRESETS[n].variant for n in names))
        self.budget_s = float(os.environ.get("GAMECRAFT_TIME_BUDGET_S", DEFAULT_BUDGET_S))
        self.tiny = weights == "tiny"
        self.size = (704, 1216)
        if self.tiny:
            self.size = tuple(int(v) for v in os.environ.get("GAMECRAFT_TINY_SIZE", "128x224").split("x"))
        world = _world_size(weights)  # checked before any download or load
        self.engine = _load_engine(weights, _engine_config(weights, preload), world)
        try:
            self.costs = measure_costs(self.engine, *self.size)  # also the compilation warm-up
        except Exception:  # noqa: BLE001 - a broken compiler toolchain must not take the model down
            if not self.engine.config.compile or hasattr(self.engine, "runtime"):
                raise  # (multi-GPU: the workers compiled too; GAMECRAFT_COMPILE=0 is the way out)
            from gamecraft.model.compile import uncompile_blocks

            log.exception("compiling the transformer failed; running it eagerly")
            for variant in self.engine.loaded_variants:
                uncompile_blocks(self.engine.transformer(variant))
            self.engine.vae.uncompile_decoder()
            self.costs = measure_costs(self.engine, *self.size)
        self._last_output_dir: Path | None = None
        log.info("setup done in %.1fs (weights: %s)", time.perf_counter() - start, weights)

    @cog.streaming
    def predict(
        self,
        image: Optional[Path] = Input(description="Start image (any common format; cover-resized and centre-cropped "
                                                  "to 704×1216). Give exactly one of image, video, continue_from.",
                                      default=None),
        prompt: str = Input(description="What the world looks like.",
                            default="A charming medieval village with cobblestone streets, thatched-roof houses.",
                            max_length=2000),
        actions: str = Input(
            description='JSON list of actions, one per 33-frame chunk: w/a/s/d (move), left_rot/right_rot/up_rot/'
                        'down_rot (look), idle, aliases like "forward"/"look_left", or combined like "w+left_rot".',
            default='["w", "s", "d", "a"]', regex=r"^\s*\[[\s\S]*\]\s*$", max_length=100000),
        action_speeds: str = Input(
            description="JSON list of speeds, one per action: translation units (0–3, try 0.2–1) for moves, degrees "
                        "per chunk (0–90, try 5–45) for looks; a combined action takes a list like [0.4, 20].",
            default="[0.2, 0.2, 0.2, 0.2]", regex=r"^\s*\[[\s\S]*\]\s*$", max_length=100000),
        preset: str = Input(description="distilled: 8 steps, guidance 1 (fast). full: 50 steps, guidance 2, step "
                                        "cache (slow, the standard model).",
                            default="distilled", choices=["distilled", "full"]),
        num_inference_steps: Optional[int] = Input(description="Override the preset's steps.", default=None,
                                                   ge=1, le=100),
        guidance_scale: Optional[float] = Input(description="Override the preset's guidance (1 = no guidance).",
                                                default=None, ge=1.0, le=20.0),
        go_fast: bool = Input(description="fp8 weights and activations in the transformer blocks: faster, slightly "
                                          "different videos (first use compiles for a minute).", default=False),
        seed: Optional[int] = Input(description="Random seed; blank = random (the seed used is logged and stored "
                                                "in the state file).", default=None, ge=0, le=2147483647),
        negative_prompt: str = Input(description="Unconditional prompt for guidance (the official pipeline always "
                                                 "uses an empty one; only matters when guidance > 1).",
                                     default="", max_length=2000),
        fps: int = Input(description="Frame rate of the output videos (the model's cadence is 25).",
                         default=25, ge=1, le=60),
        video: Optional[Path] = Input(description="Start from a video instead (its last 33 frames; at least 33).",
                                      default=None),
        continue_from: Optional[Path] = Input(description="Continue a world: the state file of an earlier prediction.",
                                              default=None),
        trajectory: Optional[Path] = Input(description="Custom camera path instead of actions: RealEstate10K-style "
                                                       "text or JSON 4×4 camera-to-world matrices, 33 per chunk.",
                                           default=None),
        return_state: bool = Input(description="Also return the world state file to continue later.", default=True),
        return_last_frame: bool = Input(description="Also return the last frame as PNG.", default=False),
        camera_preview: bool = Input(description="Also return a top-down PNG of the camera path.", default=False),
    ) -> Iterator[Path]:
        from gamecraft.pipeline.actions import parse_actions
        from gamecraft.serving.budget import check_budget
        from gamecraft.serving.generate import GenerationReport, GenerationRequest, generate, validate_request
        from gamecraft.pipeline.presets import resolve_preset
        from gamecraft.pipeline.trajectory import load_trajectory

        self._clean_previous_outputs()
        out_dir = Path(tempfile.mkdtemp(prefix="pred-", dir=_ensure_dir(OUTPUT_ROOT)))
        self._last_output_dir = out_dir
        try:
            chosen = resolve_preset(preset, num_inference_steps, guidance_scale, fp8=go_fast)
            chunks_traj = load_trajectory(trajectory) if trajectory is not None else None
            segments = () if chunks_traj is not None else parse_actions(actions, action_speeds)
            request = GenerationRequest(
                prompt=prompt, preset=chosen, segments=segments, trajectory=chunks_traj, image=image, video=video,
                continue_from=continue_from, seed=seed, negative_prompt=negative_prompt,
                size=self.size, fps=float(fps), return_state=return_state,
                last_frame=return_last_frame, camera_preview=camera_preview)
            validate_request(request)
            n_chunks = len(chunks_traj) if chunks_traj is not None else len(segments)
            estimate = check_budget(self.costs, chosen, n_chunks, starts_fresh=continue_from is None and video is None,
                                    budget_s=self.budget_s, device_name=_device_name(self.engine.device))
            log.info("request: %d chunk(s), preset %s, estimated %.0fs", n_chunks, chosen.name, estimate)
            report = GenerationReport()
            stem = f"gamecraft-{{seed}}-{uuid.uuid4().hex[:8]}"
            # closing(): a cancellation raised here stops generate()'s chunk thread before the cleanup below
            with closing(generate(self.engine, request, out_dir, stem, report)) as outputs:
                for output in outputs:
                    if output.kind == "chunk":
                        self.record_metric("chunks_done", len(report.chunk_seconds))
                        self.record_metric("seconds_per_chunk", round(report.chunk_seconds[-1], 3), mode="append")
                    yield Path(output.path)
            log.info("seed %s", report.seed)
        except cog.CancelationException:
            shutil.rmtree(out_dir, ignore_errors=True)
            _free_memory()
            raise
        except Exception as err:
            traceback.print_exc()
            shutil.rmtree(out_dir, ignore_errors=True)
            _free_memory()
            if _is_out_of_memory(err):
                raise RuntimeError("out of GPU memory during this prediction; memory was released and the model "
                                   "is ready again. Try fewer chunks per request, the distilled preset, or "
                                   "go_fast") from None
            raise
        finally:
            _trim_host_memory()

    def healthcheck(self) -> bool:
        """False once a multi-GPU worker has died (coglet then reports UNHEALTHY)."""
        engine = getattr(self, "engine", None)
        return getattr(engine, "healthy", True)

    def _clean_previous_outputs(self) -> None:
        """Outputs of the previous prediction were uploaded when it finished; don't let them pile up."""
        if self._last_output_dir is not None:
            shutil.rmtree(self._last_output_dir, ignore_errors=True)
            self._last_output_dir = None


def _speed_settings() -> dict:
    """Compiled transformer blocks and VAE decoder, attention kernel: the same for every weights source."""
    import torch

    cuda = torch.cuda.is_available()
    compile_models = cuda and os.environ.get("GAMECRAFT_COMPILE", "1") != "0"
    return dict(compile=compile_models, compile_vae=compile_models, attention_backend=_attention_backend(cuda))


def _engine_config(weights: str, preload: tuple[str, ...]):
    """The ``EngineConfig`` for ``GAMECRAFT_WEIGHTS``: ``tiny`` or a weights directory (downloaded if
    missing); None for ``random`` (no files)."""
    import torch

    from gamecraft.engine import EngineConfig
    from gamecraft.weights import MissingWeightsError, check_layout, download_weights
    from gamecraft.testing.tiny_weights import write_tiny_weights

    cuda = torch.cuda.is_available()
    if weights == "random":
        return None
    if weights == "tiny":
        tiny_dir = Path(tempfile.gettempdir()) / "gamecraft-tiny-weights"
        if not (tiny_dir / "gamecraft_models").is_dir():
            write_tiny_weights(tiny_dir)
        return EngineConfig(tiny_dir, device="cuda", preload=preload, **_speed_settings()) if cuda else \
            EngineConfig.for_cpu(tiny_dir, preload=preload)
    weights_dir = Path(weights)
    try:
        for variant in preload:
            check_layout(weights_dir, variant)
    except MissingWeightsError as err:
        first_line = str(err).splitlines()[0]
        if os.environ.get("GAMECRAFT_DOWNLOAD", "1") == "0":
            raise RuntimeError(f"{first_line}; downloading is disabled (GAMECRAFT_DOWNLOAD=0)") from None
        try:
            download_weights(weights_dir, preload, token=os.environ.get("HF_TOKEN"))
        except Exception as download_err:  # noqa: BLE001 - one clear line for SETUP_FAILED
            raise RuntimeError(f"{first_line}, and downloading them failed: "
                               f"{type(download_err).__name__}: {str(download_err).splitlines()[0]}") from None
    if not cuda:
        raise RuntimeError("no CUDA GPU found: GameCraft needs an 80 GB GPU (H100); "
                           "set GAMECRAFT_WEIGHTS=tiny for a CPU smoke run")
    return EngineConfig(weights_dir, device="cuda", preload=preload, cache_dir=weights_dir / ".safetensors-cache",
                        one_transformer_on_gpu=os.environ.get("GAMECRAFT_KEEP_BOTH", "0") != "1",
                        **_speed_settings())


def _load_engine(weights: str, config, world: int):
    """Rank 0's engine, split over ``world`` GPUs when > 1: ``config`` loaded, or full-size random
    weights (``config`` None)."""
    import torch

    from gamecraft.engine import GameCraftEngine
    from gamecraft.model import TransformerConfig
    from gamecraft.parallel import check_world_size, load_parallel_engine, start_parallel_engine
    from gamecraft.testing.random_weights import random_engine, random_worker_spec
    from gamecraft.weights import transformer_config

    heads = (transformer_config(Path(config.weights_dir)) if config is not None else TransformerConfig()).num_heads
    try:
        check_world_size(world, heads)
    except ValueError as err:
        raise RuntimeError(f"GAMECRAFT_GPUS={world}: {err}") from None
    cuda = torch.cuda.is_available()
    devices = [f"cuda:{i}" for i in range(world)] if cuda else ["cpu"] * world
    if world > 1:
        log.info("starting %d GPU workers", world - 1)
    if config is None:
        log.warning("FULL-SIZE RANDOM WEIGHTS: real speed and memory, outputs are noise")
        speed = _speed_settings()
        engine = random_engine(device="cuda" if cuda else "cpu", **speed)
        return engine if world <= 1 else start_parallel_engine(engine, random_worker_spec(**speed), world, devices)
    if weights == "tiny":
        log.warning("TINY RANDOM WEIGHTS: outputs are pipeline smoke runs, not GameCraft videos")
    return GameCraftEngine.load(config) if world <= 1 else load_parallel_engine(config, world, devices)


def _attention_backend(cuda: bool) -> str:
    from gamecraft.model.attention import ATTENTION_BACKENDS, fa3_available

    choice = os.environ.get("GAMECRAFT_ATTENTION", "auto")
    if choice == "auto":
        return "fa3" if cuda and fa3_available() else "sdpa"
    if choice not in ATTENTION_BACKENDS:
        raise RuntimeError(f"GAMECRAFT_ATTENTION={choice!r}; expected auto or one of {', '.join(ATTENTION_BACKENDS)}")
    return choice


def _world_size(weights: str) -> int:
    """How many GPUs to use (``GAMECRAFT_GPUS``, default: every visible one); checked."""
    import torch

    cuda = torch.cuda.is_available()
    default = torch.cuda.device_count() if cuda else 1
    try:
        world = int(os.environ.get("GAMECRAFT_GPUS", default))
    except ValueError:
        raise RuntimeError(f"GAMECRAFT_GPUS must be a number, got {os.environ['GAMECRAFT_GPUS']!r}") from None
    if world > 1 and cuda and world > torch.cuda.device_count():
        raise RuntimeError(f"GAMECRAFT_GPUS={world} but only {torch.cuda.device_count()} GPUs are visible")
    if world > 1 and not cuda and weights != "tiny":
        raise RuntimeError("GAMECRAFT_GPUS > 1 without GPUs is only for tests with GAMECRAFT_WEIGHTS=tiny")
    return max(world, 1)


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
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        pass


def _ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _device_name(device) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else "this CPU"
