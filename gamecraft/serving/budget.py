"""Time budget: estimate a request's run time from per-pass costs and refuse what cannot finish in time.

Replicate stops a prediction after 30 minutes; a request that cannot finish should fail at once with a
message that says what fits, not after 29 minutes of GPU time. Costs are measured at warm-up (one pass
per chunk shape, one decode) or taken from a table.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from gamecraft.pipeline.presets import PRESETS, Preset, step_cache_flags

log = logging.getLogger(__name__)

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


def measure_costs(engine, height: int, width: int, overhead_s: float = 5.0) -> PassCosts:
    """Time one transformer pass per chunk shape (the faster of two: the first selects kernels) and one
    VAE decode on ``engine`` at ``height``×``width``; doubles as the warm-up of ``setup()``."""
    import torch

    from gamecraft.specs.geometry import LATENT_CHANNELS

    device = engine.device
    model = engine.transformer(engine.loaded_variants[0] if engine.loaded_variants else "distilled")
    h, w = height // 8, width // 8
    text = engine.encode_text("warm-up", "", guidance=False)

    def timed(fn) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        begin = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - begin

    passes = []
    with torch.no_grad():
        for frames in (10, 18):
            x = torch.zeros(1, 2 * LATENT_CHANNELS + 1, frames, h, w, device=device, dtype=model.dtype)
            cam = torch.zeros(1, 33, 6, height, width, device=device)
            t = torch.full((1,), 1000.0, device=device)

            def run() -> None:
                model(x, t, text.states, text.mask, text.pooled, cam_latents=cam, text_lengths=text.lengths,
                      attention_backend=engine.attention_backend)

            passes.append(min(timed(run) for _ in range(2)))
        # the faster of two here too: the first call compiles the decoder when config.compile_vae (≈ 20 s)
        decode = min(timed(lambda: engine.vae.decode(torch.zeros(1, LATENT_CHANNELS, 9, h, w, device=device)))
                     for _ in range(2))
    log.info("measured: pass %.3fs (10 frames), %.3fs (18 frames), decode %.2fs", passes[0], passes[1], decode)
    # decode_s also covers the chunk's mp4 writes and camera embedding (≈ 20 % + 0.5 s on an H100)
    return PassCosts(first_pass_s=passes[0], later_pass_s=passes[1], decode_s=decode * 1.2 + 0.5,
                     overhead_s=overhead_s)
