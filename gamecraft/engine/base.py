"""The engine interface: everything a caller may use of the loaded models, in one place.

:class:`Engine` is implemented by :class:`gamecraft.engine.local.GameCraftEngine` (one device) and by
``gamecraft.parallel.ParallelEngine`` (several GPUs); sessions, the warm-up, the predictor and the CLI use
nothing else. :meth:`Engine.warm_up` is shared: it runs every pass shape the configured presets will run,
through the engine's own :meth:`~Engine.transformer` and :meth:`~Engine.decode`, so the compiled graphs of
every shape exist before the first request and their times feed the time budget.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import torch

from gamecraft.model import PassInputs, TransformerConfig
from gamecraft.model.attention import check_backend
from gamecraft.model.vae import GameCraftVae
from gamecraft.pipeline.sampling import TextConditioning
from gamecraft.specs.geometry import LATENT_CHANNELS, NEW_LATENT_FRAMES, latent_size

log = logging.getLogger(__name__)


class Transformer(Protocol):
    """A transformer as the sampler calls it (``GameCraftTransformer`` or its multi-GPU stand-in)."""

    config: TransformerConfig
    dtype: torch.dtype

    def camera_tokens(self, cam_latents: torch.Tensor, latent_frames: int) -> torch.Tensor:
        """[B, 33, 6, 8h, 8w] Plücker embedding → [B, T·(h/2)·(w/2), hidden] float32 camera tokens."""
        ...

    def __call__(self, inputs: PassInputs) -> torch.Tensor:
        """One pass (:class:`gamecraft.model.PassInputs`) → [B, 16, T, h, w] float32 velocity."""
        ...


@dataclass(frozen=True)
class PassShape:
    """One shape of transformer pass: ``rows`` (1, or 2 with guidance) × ``frames`` latent frames (10 for a
    first chunk, 18 for a later one), with the exact weights or the fp8 twin (``go_fast``).
    Compiled code is shared by every variant of the same shape, so a shape is warmed once."""

    rows: int
    frames: int
    go_fast: bool = False

    def __str__(self) -> str:
        rows = f"{self.rows} row{'s' if self.rows > 1 else ''}"
        return f"{rows} × {self.frames} frames{' (go_fast)' if self.go_fast else ''}"


@dataclass(frozen=True)
class WarmUp:
    """What :meth:`Engine.warm_up` measured: seconds per pass of each timed shape (the second run: the
    first compiles and selects kernels; shapes compiled but not timed are absent), of one chunk's VAE
    decode and of one prompt encode after the warm-up (``encode_seconds``), and peak GPU memory in bytes
    per shape (0 on the CPU)."""

    pass_seconds: dict[PassShape, float]
    decode_seconds: float
    peak_bytes: dict[PassShape, int]
    seconds: float
    encode_seconds: float = 0.0


class EngineFailed(RuntimeError):
    """The engine cannot run any more (a multi-GPU worker failed, a chunk thread did not stop); the model
    must be restarted. The message says why."""


class EngineBusy(RuntimeError):
    """A second generation on an engine that is running one (an engine runs one at a time)."""


_USE_LOCK = threading.Lock()  # guards every engine's ``_in_use`` (taken for microseconds)


class Engine(abc.ABC):
    """The loaded models on their device(s) (see the module docstring).

    Health and use: :meth:`mark_failed` records why the engine can no longer run (``healthy`` is False from
    then on, for good); :meth:`exclusive` holds the engine for one generation and refuses a second one."""

    _failure: str | None = None  # why the engine cannot run any more (set once, never cleared)
    _in_use: str | None = None  # what holds the engine now (exclusive)

    device: torch.device
    transformer_config: TransformerConfig
    vae: GameCraftVae  # encoding of start images and videos; decoding goes through decode()
    attention_backend: str  # the exact path's kernel (gamecraft.model.attention)
    go_fast_attention_backend: str  # the kernel go_fast uses (preset.go_fast)

    @property
    @abc.abstractmethod
    def loaded_variants(self) -> tuple[str, ...]:
        """Variants (``distilled``/``full``) whose transformer is loaded, in load order."""

    @abc.abstractmethod
    def transformer(self, variant: str, go_fast: bool = False) -> Transformer:
        """The transformer of ``variant`` (loaded on first use); ``go_fast``: its fp8 twin."""

    @abc.abstractmethod
    def encode_text(self, prompt: str, negative_prompt: str, guidance: bool) -> TextConditioning:
        """Rows ``[negative_prompt, prompt]`` with guidance, else ``[prompt]``, on the device."""

    @abc.abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [1, 16, 9, h, w] → frames [1, 3, 33, 8h, 8w] float32 in [0, 1] on the device."""

    @property
    @abc.abstractmethod
    def compiled(self) -> bool:
        """Whether the transformer blocks (and the VAE decoder) run compiled."""

    @abc.abstractmethod
    def disable_compile(self) -> None:
        """Run everything eagerly from now on (the fallback when compilation fails at warm-up)."""

    @property
    def world_size(self) -> int:
        """GPUs every pass is split over."""
        return 1

    @property
    def rows_at_once(self) -> int:
        """Guidance rows per transformer call: 2, or 1 where the GPU's memory plan says so."""
        return 2

    @property
    def healthy(self) -> bool:
        """False once the engine can no longer run (:meth:`mark_failed`; a multi-GPU worker died)."""
        return self._failure is None

    @property
    def failure(self) -> str | None:
        """Why the engine cannot run any more (None while it can)."""
        return self._failure

    def mark_failed(self, reason: str) -> None:
        """Record that the engine cannot run any more (the first reason is kept); logged once."""
        if self._failure is None:
            self._failure = reason
            log.error("the engine cannot run any more: %s; the model must be restarted", reason)

    def failed_error(self) -> EngineFailed:
        """The error a call on this failed engine raises."""
        return EngineFailed(f"{self.failure or 'the engine cannot run any more'}; the model must be restarted")

    @contextlib.contextmanager
    def exclusive(self, what: str):
        """Hold the engine for ``what`` (one generation): :class:`EngineBusy` while another holds it,
        :class:`EngineFailed` once it failed. Two generations at once would interleave their passes
        and step caches on the same models (and the multi-GPU workers' per-chunk state)."""
        with _USE_LOCK:
            if not self.healthy:
                raise self.failed_error()
            if self._in_use is not None:
                raise EngineBusy(f"this engine is already running {self._in_use}; it runs one request at a time")
            self._in_use = what
        try:
            yield self
        finally:
            with _USE_LOCK:
                self._in_use = None

    def use_attention(self, exact: str, go_fast: str) -> None:
        """Run exact passes with the attention kernel ``exact`` and go_fast passes with ``go_fast`` from the
        next pass on (:data:`gamecraft.model.attention.AttentionBackend` names; the plan chose them at setup).
        For benchmarks that pick the kernels after measuring them: compiled blocks are not recompiled, the
        attention runs outside the compiled graphs."""
        for kernel in (exact, go_fast):
            check_backend(kernel)
        self.attention_backend, self.go_fast_attention_backend = exact, go_fast

    def close(self) -> None:  # noqa: B027 - nothing to release on one device
        """Release what outlives a Python reference (multi-GPU worker processes)."""

    @torch.no_grad()
    def warm_up(
        self,
        shapes: Iterable[PassShape],
        height: int,
        width: int,
        variant: str | None = None,
        timed: Iterable[PassShape] | None = None,
    ) -> WarmUp:
        """Run every pass shape of ``shapes`` once and time those in ``timed`` (default: all) with a second
        run; then one VAE decode at ``height``×``width`` and one prompt encode.

        With compilation on, this is where every graph is compiled, so no request compiles later. The
        passes run on ``variant``'s transformer (default: the first loaded one); compiled code is shared by
        the variants, so the other variant's first request does not compile either. The passes take their
        text conditioning from :meth:`warm_up_text` (it need not wait for the text encoders); the prompt
        encode at the end does, so the first request's encode is as fast as any later one.
        """
        start = time.perf_counter()
        variant = variant or (self.loaded_variants[0] if self.loaded_variants else "distilled")
        h, w = latent_size(height, width)
        texts: dict[int, TextConditioning] = {}
        seconds: dict[PassShape, float] = {}
        peaks: dict[PassShape, int] = {}
        timed = set(shapes if timed is None else timed)
        for shape in dict.fromkeys(shapes):
            if shape.rows not in texts:
                texts[shape.rows] = self.warm_up_text(shape.rows)
            text = texts[shape.rows]
            model = self.transformer(variant, go_fast=shape.go_fast)
            backend = self.go_fast_attention_backend if shape.go_fast else self.attention_backend
            x = torch.zeros(
                shape.rows, 2 * LATENT_CHANNELS + 1, shape.frames, h, w, device=self.device, dtype=model.dtype
            )
            cam = torch.zeros(shape.rows, 33, 6, height, width, device=self.device)
            t = torch.full((shape.rows,), 1000.0, device=self.device)
            tokens = model.camera_tokens(cam, shape.frames)

            inputs = text.pass_inputs(x, t, tokens, attention_backend=backend)

            def run(model=model, inputs=inputs) -> None:
                model(inputs)

            self._reset_peak()
            first = self._timed(run)  # compiles (or loads the compiled kernels) and selects kernels
            if shape in timed:
                seconds[shape] = min(first, self._timed(run))
            peaks[shape] = self._peak()
            log.info(
                "warm-up: pass of %s in %.3fs%s", shape, seconds.get(shape, first), "" if shape in timed else " (once)"
            )
        latents = torch.zeros(1, LATENT_CHANNELS, NEW_LATENT_FRAMES, h, w, device=self.device)
        decode = min(self._timed(lambda: self.decode(latents)) for _ in range(2))
        encode = self._timed(lambda: self.encode_text("warm-up", "", guidance=False))
        log.info(
            "warm-up: decode %.2fs, prompt encode %.2fs; %d shape(s), %d timed, in %.1fs",
            decode,
            encode,
            len(peaks),
            len(seconds),
            time.perf_counter() - start,
        )
        return WarmUp(
            pass_seconds=seconds,
            decode_seconds=decode,
            peak_bytes=peaks,
            seconds=time.perf_counter() - start,
            encode_seconds=encode,
        )

    def warm_up_text(self, rows: int) -> TextConditioning:
        """Text conditioning of ``rows`` rows for the warm-up's passes (default: an encoded empty prompt)."""
        return self.encode_text("warm-up", "", guidance=rows == 2)

    def _timed(self, fn: Callable[[], object]) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        begin = time.perf_counter()
        fn()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - begin

    def _reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def _peak(self) -> int:
        return torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else 0
