"""The cameranet and transformer parity sections pass against the official goldens."""

from __future__ import annotations

import pytest

from gamecraft.parity import load_manifest, run_sections

SECTIONS = ("cameranet", "transformer")


@pytest.fixture(scope="module")
def results(golden_dir):
    return {section: run_sections(golden_dir, [section]) for section in SECTIONS}


@pytest.mark.parametrize("section", SECTIONS)
def test_parity_section_passes(results, section):
    assert results[section], f"section {section} compared nothing"
    failed = [r.line() for r in results[section] if not r.ok]
    assert not failed, "\n".join(failed)


@pytest.mark.parametrize("section", SECTIONS)
def test_section_covers_every_golden_output(golden_dir, results, section):
    """Every output/intermediate/RoPE tensor of the manifest is compared (goldens get regenerated)."""
    names = {r.name for r in results[section]}
    manifest = load_manifest(golden_dir, section)["tensors"]
    if section == "cameranet":
        wanted = {k for k in manifest if not k.startswith("weights/") and k != "input_plucker"}
    else:
        wanted = {
            k
            for k in manifest
            if k.startswith(("out/", "inter", "rope_production", "in/freqs_")) and not k.endswith("_index")
        }
    assert wanted <= names, sorted(wanted - names)
