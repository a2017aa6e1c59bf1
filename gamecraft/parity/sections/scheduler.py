"""Parity section ``scheduler``: shifted flow-matching schedule and Euler steps.

Reads the constructor (``shift``, ``num_train_timesteps``) from ``scheduler.json``, every
``timesteps_<n>`` / ``sigmas_<n>`` pair present, and the step chain
(``step/sample``, ``step/model_output_<i>``, ``step/prev_sample_after_step_<i>``) run on the schedule
named in ``step_chain`` ("... on the <n>-step schedule ...").
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from gamecraft.parity import Comparison, compare, load_manifest, load_tensors
from gamecraft.pipeline.scheduler import euler_step, get_schedule

SECTION = "scheduler"
_SCHEDULE_KEY = re.compile(r"^(timesteps|sigmas)_(\d+)$")
_STEP_OUTPUT_KEY = re.compile(r"^step/prev_sample_after_step_(\d+)$")
_CHAIN_STEPS = re.compile(r"(\d+)-step schedule")


def check(golden_dir: Path) -> Iterator[Comparison]:
    manifest = load_manifest(golden_dir, "scheduler")
    tensors = load_tensors(golden_dir, "scheduler")
    ctor = manifest["constructor"]
    if ctor.get("solver", "euler") != "euler" or not ctor.get("reverse", True):
        raise ValueError(f"scheduler goldens use an unsupported constructor: {ctor}")
    shift = float(ctor["shift"])
    train_steps = int(ctor.get("num_train_timesteps", 1000))

    for name in sorted(manifest["tensors"]):
        match = _SCHEDULE_KEY.match(name)
        if match:
            timesteps, sigmas = get_schedule(int(match[2]), shift, train_steps)
            actual = timesteps if match[1] == "timesteps" else sigmas
            yield compare(SECTION, name, actual, tensors[name])

    chain = _CHAIN_STEPS.search(manifest.get("step_chain", ""))
    steps = sorted(int(m[1]) for name in manifest["tensors"] if (m := _STEP_OUTPUT_KEY.match(name)))
    if steps and not chain:
        raise ValueError("scheduler.json has step tensors but its step_chain names no '<n>-step schedule'")
    if steps:
        _, sigmas = get_schedule(int(chain[1]), shift, train_steps)
        sample = tensors["step/sample"]
        for i in range(max(steps) + 1):
            sample = euler_step(sample, tensors[f"step/model_output_{i}"], sigmas[i], sigmas[i + 1])
            if i in steps:
                name = f"step/prev_sample_after_step_{i}"
                yield compare(SECTION, name, sample, tensors[name])
