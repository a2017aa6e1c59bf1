"""benchmarks/bench_setup.py --tiny on the CPU: prepares a tiny cached weights directory, measures setup()
in a fresh process through the safetensors cache (the .pt is a sparse placeholder) and writes the JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_bench_setup_tiny_uses_the_cache(tmp_path):
    weights, out = tmp_path / "weights", tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "benchmarks" / "bench_setup.py"),
            "--tiny",
            "--dir",
            str(weights),
            "--out",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((out / "bench_setup.json").read_text())
    assert result["tiny"] and result["device"] == "cpu"
    assert set(result["prepare"]["components"]) == {
        "LLaVA language model",
        "CLIP text model",
        "VAE",
        "transformer cache",
    }
    (row,) = result["rows"]
    assert row["cache_used"] is True
    assert set(row["components_s"]) == {"vae", "text_encoders", "transformer", "other"}
    for key in ("import_s", "load_s", "warmup_s", "total_s"):
        assert row[key] > 0, key
    assert row["total_s"] >= row["load_s"] + row["warmup_s"]
    assert row["costs"]["first_pass_s"] > 0
    assert result["environment"]["torch"] and result["environment"]["disk"]["fstype"]
    assert "run 1 (inductor cache cold" in proc.stdout  # the one-line summary

    # The transformer came from the cache beside a sparse placeholder .pt; the LLM is sharded.
    pt = weights / "gamecraft_models" / "mp_rank_00_model_states_distill.pt"
    assert Path(result["prepare"]["cache"]).is_file()
    assert pt.stat().st_size > 0 and pt.stat().st_blocks == 0
    index = weights / "stdmodels" / "llava-llama-3-8b-v1_1-transformers" / "model.safetensors.index.json"
    assert len(set(json.loads(index.read_text())["weight_map"].values())) == 2


def test_bench_setup_refuses_a_cache_that_setup_would_ignore(tmp_path):
    from benchmarks import setup_weights
    from gamecraft.model import TransformerConfig

    config = TransformerConfig.tiny()
    setup_weights.write_transformer_cache(tmp_path, config)
    assert setup_weights.assert_cache_valid(tmp_path, config).is_file()
    pt = tmp_path / "gamecraft_models" / "mp_rank_00_model_states_distill.pt"
    os.utime(pt, ns=(pt.stat().st_atime_ns, pt.stat().st_mtime_ns + 10**9))  # the .pt is now newer
    with pytest.raises(SystemExit, match="older than"):
        setup_weights.assert_cache_valid(tmp_path, config)


def test_bench_setup_tiny_with_two_ranks_times_the_workers(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "benchmarks" / "bench_setup.py"),
            "--tiny",
            "--gpus",
            "2",
            "--dir",
            str(tmp_path / "weights"),
            "--out",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (row,) = json.loads((out / "bench_setup.json").read_text())["rows"]
    assert row["gpus"] == 2 and row["workers_s"] > 0 and row["cache_used"] is True
    assert row["total_s"] >= row["load_s"] + row["workers_s"] + row["warmup_s"]
    assert "+ workers for 1 more GPU(s)" in proc.stdout
