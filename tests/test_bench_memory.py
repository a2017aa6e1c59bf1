"""benchmarks/bench_memory.py on tiny CPU models: the script end to end (the engine features it measures are
tested in test_engine_memory.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT


def run(out: Path, *args: str) -> dict:
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "bench_memory.py"), "--tiny", "--out", str(out), *args],
        cwd=REPO_ROOT,
        check=True,
        timeout=900,
        capture_output=True,
    )
    return json.loads((out / "bench_memory.json").read_text())


def test_bench_memory_tiny_runs_every_phase_of_each_cap(tmp_path):
    # planned for a GPU host's memory (this machine's may be too small for the L40S twin's pinned copies)
    result = run(tmp_path, "--caps", "l40s", "80gb", "--chunks", "1", "--full-chunks", "1", "--host-gib", "128")
    rows = result["rows"]
    assert not result["environment"]["any_error"], [r for r in rows if "error" in r]
    for cap in ("l40s", "80gb"):
        phases = [r["phase"] for r in rows if r["cap"] == cap]
        for phase in (
            "setup (build + warm-up)",
            "distilled: encode",
            "distilled: chunk 1",
            "full: chunk 1",
            "distilled go_fast: chunk 1",
        ):
            assert phase in phases, (cap, phases)
    assert rows[0]["phase"] == "setup (build + warm-up)" and any(r["phase"].startswith("warm-up pass") for r in rows)
    l40s, h100 = result["caps"]["l40s"], result["caps"]["80gb"]
    assert l40s["plan"]["rows_one_at_a_time"] and l40s["plan"]["fp8_twin"] == "replace"
    assert h100["plan"]["fp8_twin"] == "beside" and not h100["plan"]["rows_one_at_a_time"]
    assert 44.3 < l40s["cap_gib"] < 44.5 and 78.9 < h100["cap_gib"] < 79.2
    assert "| l40s | full: chunk 1 |" in (tmp_path / "bench_memory.md").read_text()


def test_bench_memory_tiny_non_hopper_choices(tmp_path):
    result = run(tmp_path, "--caps", "l40s", "--non-hopper", "--chunks", "1", "--full-chunks", "0", "--host-gib", "128")
    cap = result["caps"]["l40s"]
    assert cap["attention"] == {"exact": "sdpa-cudnn", "go_fast": "sdpa-cudnn"}
    assert cap["plan"]["fp8_twin"] == "unsupported" and "go_fast runs exact" in cap["summary"]
    assert not any("go_fast" in r["phase"] for r in result["rows"])
