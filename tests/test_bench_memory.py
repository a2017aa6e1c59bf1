"""benchmarks/bench_memory.py on tiny CPU models: the script end to end, and its emulation of the plan's
features the engine does not have yet (guidance rows one at a time, the fp8 twin replacing bf16 linears)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from conftest import REPO_ROOT

from benchmarks.bench_memory import PlannedEngine, RowByRow, build_engine
from gamecraft import hardware
from gamecraft.model import GameCraftTransformer, StepCache, TransformerConfig, init_random_


def run(out: Path, *args: str) -> dict:
    subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "bench_memory.py"), "--tiny", "--out", str(out),
                    *args], cwd=REPO_ROOT, check=True, timeout=900, capture_output=True)
    return json.loads((out / "bench_memory.json").read_text())


def test_bench_memory_tiny_runs_every_phase_of_each_cap(tmp_path):
    result = run(tmp_path, "--caps", "l40s", "80gb", "--chunks", "1", "--full-chunks", "1")
    rows = result["rows"]
    assert not result["environment"]["any_error"], [r for r in rows if "error" in r]
    for cap in ("l40s", "80gb"):
        phases = [r["phase"] for r in rows if r["cap"] == cap]
        for phase in ("setup_warmup", "fp8_build", "distilled: encode", "distilled: chunk 1", "full: chunk 1",
                      "distilled go_fast: chunk 1"):
            assert phase in phases, (cap, phases)
    assert rows[0]["phase"] == "build"
    l40s, h100 = result["caps"]["l40s"], result["caps"]["80gb"]
    assert l40s["plan"]["rows_one_at_a_time"] and l40s["plan"]["fp8_twin"] == "replace"
    assert h100["plan"]["fp8_twin"] == "beside" and not h100["plan"]["rows_one_at_a_time"]
    assert 44.3 < l40s["cap_gib"] < 44.5 and 78.9 < h100["cap_gib"] < 79.2
    assert "| l40s | full: chunk 1 |" in (tmp_path / "bench_memory.md").read_text()


def test_bench_memory_tiny_non_hopper_choices(tmp_path):
    result = run(tmp_path, "--caps", "l40s", "--non-hopper", "--chunks", "1", "--full-chunks", "0")
    cap = result["caps"]["l40s"]
    assert cap["attention"] == {"exact": "sdpa-cudnn", "go_fast": "sdpa-cudnn"}
    assert cap["plan"]["fp8_twin"] == "unsupported" and "go_fast runs exact" in cap["summary"]
    assert not any("go_fast" in r["phase"] or r["phase"] == "fp8_build" for r in result["rows"])


@torch.no_grad()
def test_rows_one_at_a_time_gives_the_batched_pass():
    model = init_random_(GameCraftTransformer(TransformerConfig.tiny(), dtype=torch.float32, device="meta"), seed=3)
    config, g = model.config, torch.Generator().manual_seed(1)
    mask = torch.tensor([[1] * 3 + [0] * 7, [1] * 8 + [0] * 2])
    args = (torch.randn(2, config.img_in_channels, 18, 4, 6, generator=g), torch.tensor([900.0, 900.0]),
            torch.randn(2, 10, config.text_states_dim, generator=g), mask,
            torch.randn(2, config.text_states_dim_2, generator=g))
    camera = model.camera_tokens(torch.randn(2, 33, 6, 32, 48, generator=g), 18)
    batched_cache, rows_cache = StepCache(), StepCache()
    batched = model(*args, camera_tokens=camera, text_lengths=[3, 8], cache=batched_cache)
    split = RowByRow(model)(*args, camera_tokens=camera, text_lengths=[3, 8], cache=rows_cache)
    torch.testing.assert_close(split, batched, rtol=1e-4, atol=1e-5)
    assert [c.features.shape[0] for c in rows_cache.row_caches] == [1, 1]  # one StepCache per row
    t2 = torch.tensor([800.0, 800.0])
    torch.testing.assert_close(
        RowByRow(model)(args[0], t2, *args[2:], camera_tokens=camera, text_lengths=[3, 8], cache=rows_cache,
                        use_cache=True),
        model(args[0], t2, *args[2:], camera_tokens=camera, text_lengths=[3, 8], cache=batched_cache, use_cache=True),
        rtol=1e-4, atol=1e-5)
    assert RowByRow(model).config is config  # the sampler reads the model's attributes through the wrapper


def test_fp8_replace_keeps_one_of_bf16_and_fp8_linears():
    cpu = hardware.choose_attention(None, fa3_installed=False)
    planned = PlannedEngine(build_engine("cpu", cpu, hardware.compile_settings(None), False, tiny=True))
    planned.fp8_replace = True
    bf16 = planned.original("distilled")
    weights = [m.weight for name, m in bf16.named_modules() if "block" in name and "mod" not in name
               and isinstance(m, torch.nn.Linear)]
    shapes = [w.shape for w in weights]
    for _ in range(2):  # the first call builds the twin from the bf16 weights, the second reuses it
        twin = planned.transformer("distilled", fast=True)
        assert all(w.numel() == 0 for w in weights)  # the bf16 block linears left the device
        assert all(m.weight_fp8.numel() for m in twin.modules() if hasattr(m, "weight_fp8"))
    planned.transformer("distilled")
    assert [w.shape for w in weights] == shapes
    assert all(m.weight_fp8.numel() == 0 for m in twin.modules() if hasattr(m, "weight_fp8"))
    planned.fp8_replace = False  # beside: both stay
    assert planned.transformer("distilled", fast=True) is twin and all(w.numel() for w in weights)
