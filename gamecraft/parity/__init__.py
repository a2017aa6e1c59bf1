"""Parity against the golden vectors produced by the official implementation.

Every section lives in ``gamecraft/parity/sections/<name>.py`` and exposes
``check(golden_dir: pathlib.Path) -> Iterable[Comparison]``. Sizes, keys and configs are read from the
golden JSON manifests, never hard-coded, because the goldens get regenerated with other seeds, sizes
and tiny configs.

Tolerances (``TOLERANCES``) are the ones the golden README suggests for an independent fp32
reimplementation; integer tensors (ids, masks) must match exactly.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

# Sections in the order they are run. A section whose module does not exist yet is reported as
# "not implemented" when asked for explicitly and skipped when running everything.
SECTIONS = ("actions", "cameranet", "transformer", "scheduler", "vae", "text", "e2e")

# (atol, rtol) per section, from shared/golden/README.md ("Suggested test tolerance ...").
TOLERANCES: dict[str, tuple[float, float]] = {
    "actions": (1e-5, 1e-5),
    "cameranet": (1e-4, 1e-4),
    "transformer": (1e-4, 1e-4),
    "scheduler": (1e-5, 1e-5),
    "vae": (1e-4, 1e-4),
    "text": (1e-4, 1e-4),
    "e2e": (1e-4, 1e-4),
}


@dataclass(frozen=True)
class Comparison:
    """One compared tensor. ``ok`` means ``|actual - expected| <= atol + rtol * |expected|`` everywhere."""

    section: str
    name: str
    max_abs_err: float
    atol: float
    rtol: float
    ok: bool
    note: str = ""

    def line(self) -> str:
        status = "ok" if self.ok else "FAIL"
        tol = "exact" if self.atol == 0 and self.rtol == 0 else f"atol={self.atol:g} rtol={self.rtol:g}"
        note = f"  ({self.note})" if self.note else ""
        return f"{self.section:<12} {self.name:<60} max_abs_err={self.max_abs_err:.3e}  {tol:<22} {status}{note}"


def compare(
    section: str, name: str, actual, expected, atol: float | None = None, rtol: float | None = None, note: str = ""
) -> Comparison:
    """Compare two tensors (or arrays). Integer/bool tensors are compared exactly.

    A shape mismatch is a failure with ``max_abs_err = inf`` and the shapes in the note.
    """
    actual = torch.as_tensor(actual).detach().cpu()
    expected = torch.as_tensor(expected).detach().cpu()
    default_atol, default_rtol = TOLERANCES[section]
    if not (expected.is_floating_point() or expected.is_complex()):
        atol, rtol = 0.0, 0.0
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol
    if tuple(actual.shape) != tuple(expected.shape):
        return Comparison(
            section,
            name,
            math.inf,
            atol,
            rtol,
            False,
            f"shape {tuple(actual.shape)} != expected {tuple(expected.shape)}",
        )
    a = actual.to(torch.float64)
    e = expected.to(torch.float64)
    if a.numel() == 0:
        return Comparison(section, name, 0.0, atol, rtol, True, note)
    diff = (a - e).abs()
    finite = bool(torch.isfinite(a).all())
    ok = finite and bool((diff <= atol + rtol * e.abs()).all())
    max_err = float(diff.max()) if finite else math.inf
    return Comparison(section, name, max_err, atol, rtol, ok, note)


def load_manifest(golden_dir: Path, stem: str) -> dict:
    """The JSON manifest ``<stem>.json`` next to ``<stem>.safetensors``."""
    return json.loads((Path(golden_dir) / f"{stem}.json").read_text())


def load_tensors(golden_dir: Path, stem: str) -> dict[str, torch.Tensor]:
    """All tensors of ``<stem>.safetensors`` (loaded eagerly; the goldens are small)."""
    from safetensors.torch import load_file

    return load_file(str(Path(golden_dir) / f"{stem}.safetensors"))


def _section_module(name: str):
    """The section's module, or ``None`` when this checkout does not implement it."""
    try:
        return importlib.import_module(f"gamecraft.parity.sections.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"gamecraft.parity.sections.{name}":
            raise
        return None


def available_sections() -> list[str]:
    """Sections whose check module exists in this checkout."""
    return [name for name in SECTIONS if _section_module(name) is not None]


def run_sections(golden_dir: Path, sections: Iterable[str] | None = None) -> list[Comparison]:
    """Run the given sections (all available ones when ``None``) and return every comparison."""
    golden_dir = Path(golden_dir)
    names = list(sections) if sections else available_sections()
    for name in names:
        if name not in SECTIONS:
            raise ValueError(f"unknown parity section {name!r}; expected one of {', '.join(SECTIONS)}")
    results: list[Comparison] = []
    for name in names:
        module = _section_module(name)
        if module is None:
            raise ValueError(f"parity section {name!r} is not implemented in this checkout")
        results.extend(module.check(golden_dir))
    return results
