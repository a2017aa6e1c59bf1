"""Time-budget estimates and the refusal message (independent arithmetic on a made-up cost table)."""

from __future__ import annotations

import pytest

from gamecraft.pipeline.presets import resolve_preset
from gamecraft.serving.budget import PassCosts, check_budget, estimate_seconds, max_chunks_within

COSTS = PassCosts(first_pass_s=3.0, later_pass_s=7.0, decode_s=5.0, overhead_s=10.0, cached_fraction=0.0)


def test_distilled_estimate_counts_one_row_and_eight_passes():
    preset = resolve_preset("distilled")
    # first chunk 8×3 + 5, two later chunks 8×7 + 5 each, plus overhead
    assert estimate_seconds(COSTS, preset, 3, starts_fresh=True) == 10 + (24 + 5) + 2 * (56 + 5)
    assert estimate_seconds(COSTS, preset, 2, starts_fresh=False) == 10 + 2 * (56 + 5)


def test_full_preset_uses_two_rows_and_the_step_cache():
    preset = resolve_preset("full")
    # 50 steps, 15 of them cached (free here), guidance doubles each pass
    assert estimate_seconds(COSTS, preset, 1, starts_fresh=False) == 10 + 35 * 7 * 2 + 5
    no_cache = resolve_preset("full", step_cache=False)
    assert estimate_seconds(COSTS, no_cache, 1, starts_fresh=False) == 10 + 50 * 7 * 2 + 5


def test_refusal_says_what_fits():
    preset = resolve_preset("full")
    budget = 28 * 60
    fits = max_chunks_within(COSTS, preset, True, budget)
    assert estimate_seconds(COSTS, preset, fits, True) <= budget < estimate_seconds(COSTS, preset, fits + 1, True)
    with pytest.raises(ValueError) as info:
        check_budget(COSTS, preset, 12, True, budget, "NVIDIA H100")
    need = estimate_seconds(COSTS, preset, 12, True) / 60
    assert str(info.value) == (
        f"12 chunks at the full preset (50 steps, guidance 2) need ~{need:.0f} min on NVIDIA H100; "
        f"the limit is 28 min: use ≤ {fits} chunks, or the distilled preset"
    )
    assert check_budget(COSTS, resolve_preset("distilled"), 12, True, budget) == estimate_seconds(
        COSTS, resolve_preset("distilled"), 12, True
    )
