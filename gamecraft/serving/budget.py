"""Time budget: estimate a request's run time from per-pass costs and refuse what cannot finish in time.

Replicate stops a prediction after 30 minutes; a request that cannot finish should fail at once with a
message that says what fits, not after 29 minutes of GPU time. Costs are measured at warm-up (every pass
shape the configured presets run, one decode: :meth:`gamecraft.engine.Engine.warm_up`) or taken from a table.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gamecraft.engine import Engine
from gamecraft.engine.base import PassShape, WarmUp
from gamecraft.pipeline.presets import PRESETS, Preset, step_cache_flags
from gamecraft.specs.errors import RequestError
from gamecraft.specs.geometry import FIRST_CHUNK_LATENT_FRAMES, LATER_CHUNK_LATENT_FRAMES, PASS_LATENT_FRAMES

log = logging.getLogger(__name__)

DEFAULT_BUDGET_S = 28 * 60  # Replicate's 30-minute limit minus a margin for upload and start-up


@dataclass(frozen=True)
class PassCosts:
    """Seconds for one transformer pass with one batch row (first chunk: 10 latent frames, later: 18),
    one chunk's VAE decode + mp4 encode, and the per-request overhead (prompt and start encoding).

    ``cfg_factor``: cost of a guidance pass (2 rows) relative to 1 row (measured 2.03–2.07 on H100/H200,
    exact and go_fast, BENCHMARKS.md: the 2.0 used for shapes setup compiles but does not time is within
    4 %). ``cached_fraction``: a step-cache
    step runs one of the 60 blocks plus the final layer. ``measured``: seconds per pass of the shapes the
    warm-up ran (:class:`gamecraft.engine.PassShape`); a shape found there is used as measured, the others
    are derived from the one-row times.
    """

    first_pass_s: float
    later_pass_s: float
    decode_s: float
    overhead_s: float
    cfg_factor: float = 2.0
    cached_fraction: float = 1 / 40
    measured: Mapping[PassShape, float] = field(default_factory=dict)

    def pass_seconds(self, rows: int, first: bool, go_fast: bool = False) -> float:
        frames = FIRST_CHUNK_LATENT_FRAMES if first else LATER_CHUNK_LATENT_FRAMES
        for shape in (PassShape(rows, frames, go_fast), PassShape(rows, frames, False)):
            if shape in self.measured:
                return self.measured[shape]
        if rows == 2:  # a guidance pass: cfg_factor one-row passes of the same kind
            return self.pass_seconds(1, first, go_fast) * self.cfg_factor
        return self.first_pass_s if first else self.later_pass_s

    def chunk_seconds(self, preset: Preset, first: bool) -> float:
        return denoise_seconds(self, preset, first) + self.decode_s


def denoise_seconds(costs: PassCosts, preset: Preset, first: bool) -> float:
    """Seconds of one chunk's denoising (every step, cached steps at their fraction), without the decode."""
    flags = step_cache_flags(preset.num_inference_steps, preset.step_cache)
    passes = sum(costs.cached_fraction if cached else 1.0 for cached in flags)
    return passes * costs.pass_seconds(2 if preset.uses_cfg else 1, first, preset.go_fast)


def warm_up_shapes(presets: Iterable[Preset], go_fast: bool, rows_at_once: int = 2) -> list[PassShape]:
    """Every pass shape the ``presets`` run: their row count (2 with guidance; at most ``rows_at_once``, the
    engine's rows per call) × 10 and 18 latent frames; the exact shapes first, then, with ``go_fast``, the fp8
    twin's (so an fp8 twin that replaces the bf16 linears is swapped once)."""
    rows = sorted({min(2 if preset.uses_cfg else 1, rows_at_once) for preset in presets})
    shapes = [
        PassShape(r, frames, twin)
        for twin in ((False, True) if go_fast else (False,))
        for r in rows
        for frames in PASS_LATENT_FRAMES
    ]
    return shapes


def request_shapes(preset: Preset, chunks: int, starts_fresh: bool, rows_at_once: int = 2) -> list[PassShape]:
    """The pass shapes one request runs: the preset's rows (2 with guidance; at most ``rows_at_once``) with
    go_fast or not, at 10 latent frames for a first chunk from an image and 18 for every other chunk."""
    rows = min(2 if preset.uses_cfg else 1, rows_at_once)
    frames = [FIRST_CHUNK_LATENT_FRAMES] if starts_fresh else []
    if chunks > 1 or not starts_fresh:
        frames.append(LATER_CHUNK_LATENT_FRAMES)
    return [PassShape(rows, f, preset.go_fast) for f in frames]


def estimate_seconds(costs: PassCosts, preset: Preset, chunks: int, starts_fresh: bool) -> float:
    """Seconds for ``chunks`` chunks; the first is a 10-frame chunk when the world starts from an image."""
    if chunks <= 0:
        return costs.overhead_s
    first = costs.chunk_seconds(preset, first=True) if starts_fresh else costs.chunk_seconds(preset, first=False)
    return costs.overhead_s + first + (chunks - 1) * costs.chunk_seconds(preset, first=False)


def max_chunks_within(costs: PassCosts, preset: Preset, starts_fresh: bool, budget_s: float) -> int:
    """The most chunks that fit in ``budget_s``."""
    n = 0
    while estimate_seconds(costs, preset, n + 1, starts_fresh) <= budget_s and n < 10_000:
        n += 1
    return n


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{math.ceil(seconds)} s"


def check_budget(
    costs: PassCosts, preset: Preset, chunks: int, starts_fresh: bool, budget_s: float, device_name: str = "this GPU"
) -> float:
    """Return the estimate, or raise :class:`RequestError` saying what fits when it exceeds ``budget_s``."""
    need = estimate_seconds(costs, preset, chunks, starts_fresh)
    if need <= budget_s:
        return need
    fits = max_chunks_within(costs, preset, starts_fresh, budget_s)
    advice = [f"use ≤ {fits} chunk{'s' if fits != 1 else ''}" if fits else "no chunk fits at these settings"]
    faster = PRESETS["distilled"]
    if preset.name != faster.name and estimate_seconds(costs, faster, chunks, starts_fresh) <= budget_s:
        advice.append("or the distilled preset")
    raise RequestError(
        f"{chunks} chunk{'s' if chunks != 1 else ''} at the {preset.name} preset "
        f"({preset.num_inference_steps} steps, guidance {preset.guidance_scale:g}) need ~{_minutes(need)} "
        f"on {device_name}; the limit is {_minutes(budget_s)}: {', '.join(advice)}"
    )


def costs_from_warm_up(warm: WarmUp, overhead_s: float = 5.0) -> PassCosts:
    """The cost table of a warm-up: its pass times as measured, one-row times for the rest (a two-row pass
    counts as two one-row ones when only the two-row shape was run)."""

    def one_row(frames: int) -> float:
        if PassShape(1, frames) in warm.pass_seconds:
            return warm.pass_seconds[PassShape(1, frames)]
        two = warm.pass_seconds.get(PassShape(2, frames))
        return two / 2 if two is not None else 0.0

    # decode_s also covers the chunk's mp4 writes and camera embedding (≈ 20 % + 0.5 s on an H100)
    return PassCosts(
        first_pass_s=one_row(FIRST_CHUNK_LATENT_FRAMES),
        later_pass_s=one_row(LATER_CHUNK_LATENT_FRAMES),
        decode_s=warm.decode_seconds * 1.2 + 0.5,
        overhead_s=overhead_s,
        measured=dict(warm.pass_seconds),
    )


def measure_costs(
    engine: Engine, height: int, width: int, shapes: Iterable[PassShape] | None = None, overhead_s: float = 5.0
) -> PassCosts:
    """Warm up ``engine`` on ``shapes`` (default: one row at 10 and 18 latent frames) at ``height``×``width``
    and return the cost table; with compilation on, this compiles every shape (``setup()``'s warm-up)."""
    shapes = list(shapes) if shapes is not None else [PassShape(1, f) for f in PASS_LATENT_FRAMES]
    warm = engine.warm_up(shapes, height, width)
    costs = costs_from_warm_up(warm, overhead_s)
    log.info(
        "measured: pass %.3fs (10 frames), %.3fs (18 frames), decode %.2fs",
        costs.first_pass_s,
        costs.later_pass_s,
        warm.decode_seconds,
    )
    return costs
