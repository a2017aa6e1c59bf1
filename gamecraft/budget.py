"""Time budget: estimate a request's run time from per-pass costs and refuse what cannot finish in time.

Replicate stops a prediction after 30 minutes; a request that cannot finish should fail at once with a
message that says what fits, not after 29 minutes of GPU time. Costs are measured at warm-up (one pass
per chunk shape, one decode) or taken from a table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gamecraft.presets import PRESETS, Preset, step_cache_flags

DEFAULT_BUDGET_S = 28 * 60  # Replicate's 30-minute limit minus a margin for upload and start-up


@dataclass(frozen=True)
class PassCosts:
    """Seconds for one transformer pass with one batch row (first chunk: 10 latent frames, later: 18),
    one chunk's VAE decode + mp4 encode, and the per-request overhead (prompt and start encoding).

    ``cfg_factor``: cost of a guidance pass (2 rows) relative to 1 row. ``cached_fraction``: a step-cache
    step runs one of the 60 blocks plus the final layer.
    """

    first_pass_s: float
    later_pass_s: float
    decode_s: float
    overhead_s: float
    cfg_factor: float = 2.0
    cached_fraction: float = 1 / 40

    def chunk_seconds(self, preset: Preset, first: bool) -> float:
        flags = step_cache_flags(preset.num_inference_steps, preset.step_cache)
        passes = sum(self.cached_fraction if cached else 1.0 for cached in flags)
        per_pass = self.first_pass_s if first else self.later_pass_s
        rows = self.cfg_factor if preset.uses_cfg else 1.0
        return passes * per_pass * rows + self.decode_s


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


def check_budget(costs: PassCosts, preset: Preset, chunks: int, starts_fresh: bool, budget_s: float,
                 device_name: str = "this GPU") -> float:
    """Return the estimate, or raise ``ValueError`` saying what fits when it exceeds ``budget_s``."""
    need = estimate_seconds(costs, preset, chunks, starts_fresh)
    if need <= budget_s:
        return need
    fits = max_chunks_within(costs, preset, starts_fresh, budget_s)
    advice = [f"use ≤ {fits} chunk{'s' if fits != 1 else ''}" if fits else "no chunk fits at these settings"]
    faster = PRESETS["distilled"]
    if preset.name != faster.name and estimate_seconds(costs, faster, chunks, starts_fresh) <= budget_s:
        advice.append("or the distilled preset")
    raise ValueError(f"{chunks} chunk{'s' if chunks != 1 else ''} at the {preset.name} preset "
                     f"({preset.num_inference_steps} steps, guidance {preset.guidance_scale:g}) need ~{_minutes(need)} "
                     f"on {device_name}; the limit is {_minutes(budget_s)}: {', '.join(advice)}")
