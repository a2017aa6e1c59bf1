"""The controller page's example start images are made by tools/make_start_images.py: running it again gives
the committed PNGs and index (up to last-digit differences of transcendental functions between CPUs)."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from tools.make_start_images import OUT, write_all


def test_the_script_reproduces_the_committed_examples(tmp_path):
    index = write_all(tmp_path)
    assert json.loads((OUT / "index.json").read_text()) == index == json.loads((tmp_path / "index.json").read_text())
    assert sorted(p.name for p in OUT.glob("*.png")) == sorted(e["file"] for e in index)
    for entry in index:
        committed = np.asarray(Image.open(OUT / entry["file"]).convert("RGB"), dtype=np.int16)
        fresh = np.asarray(Image.open(tmp_path / entry["file"]).convert("RGB"), dtype=np.int16)
        assert committed.shape == fresh.shape == (704, 1216, 3), entry["file"]
        diff = np.abs(committed - fresh)
        assert (diff > 2).mean() < 1e-3 and diff.mean() < 0.05, entry["file"]
        assert (OUT / entry["file"]).stat().st_size < 400_000  # small enough for the repository and data URIs
