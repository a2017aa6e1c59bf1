"""Generation presets as data: which checkpoint, how many steps, guidance and shift.

``distilled`` is the official distilled recipe (``mp_rank_00_model_states_distill.pt``, 8 steps,
guidance 1.0 — one transformer row per step); ``full`` is the standard model's recipe (50 steps,
guidance 2.0, the reference's step cache on). Both use flow shift 5. Overrides are explicit
arguments of :func:`resolve_preset`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from gamecraft.specs.errors import RequestError

STEP_CACHE_STEPS = 50  # the reference uses its step cache only for exactly 50 steps


@dataclass(frozen=True)
class Preset:
    name: str
    variant: str  # "distilled" | "full": which transformer checkpoint (gamecraft.weights)
    num_inference_steps: int
    guidance_scale: float
    flow_shift: float
    step_cache: bool
    go_fast: bool = False  # fp8 block linears (gamecraft.model.fp8)

    @property
    def uses_cfg(self) -> bool:
        """Classifier-free guidance runs two rows (uncond, cond) only when guidance > 1, as the reference."""
        return self.guidance_scale > 1.0


PRESETS: dict[str, Preset] = {
    "distilled": Preset("distilled", "distilled", 8, 1.0, 5.0, step_cache=False),
    "full": Preset("full", "full", 50, 2.0, 5.0, step_cache=True),
}

MAX_STEPS = 100
MAX_GUIDANCE = 20.0


def resolve_preset(
    name: str,
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    flow_shift: float | None = None,
    step_cache: bool | None = None,
    go_fast: bool = False,
) -> Preset:
    """The named preset with explicit overrides applied; ``RequestError`` on unknown names or bad values."""
    if name not in PRESETS:
        raise RequestError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    preset = PRESETS[name]
    if num_inference_steps is not None:
        if not 1 <= num_inference_steps <= MAX_STEPS:
            raise RequestError(f"num_inference_steps must be between 1 and {MAX_STEPS}, got {num_inference_steps}")
        preset = replace(preset, num_inference_steps=int(num_inference_steps))
    if guidance_scale is not None:
        if not 1.0 <= guidance_scale <= MAX_GUIDANCE:
            raise RequestError(f"guidance_scale must be between 1 and {MAX_GUIDANCE:g}, got {guidance_scale:g}")
        preset = replace(preset, guidance_scale=float(guidance_scale))
    if flow_shift is not None:
        if not 0.0 < flow_shift <= 100.0:
            raise ValueError(f"flow_shift must be in (0, 100], got {flow_shift:g}")
        preset = replace(preset, flow_shift=float(flow_shift))
    if step_cache is not None:
        preset = replace(preset, step_cache=bool(step_cache))
    return replace(preset, go_fast=bool(go_fast))


def step_cache_flags(num_steps: int, enabled: bool) -> list[bool]:
    """Which steps reuse the cached features: the reference's odd steps 11, 13, …, 39 of exactly 50.

    Any other step count (or ``enabled=False``) runs every step in full.
    """
    if not enabled or num_steps != STEP_CACHE_STEPS:
        return [False] * num_steps
    return [11 <= i <= 39 and i % 2 == 1 for i in range(num_steps)]
