"""The GPU benchmark scripts run end to end on tiny CPU models (their GPU runs are scarce: a script that
breaks there wastes the run). Checks the rows they write, not timings."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO_ROOT


def run(script: str, *args: str, timeout: int = 600) -> None:
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / script), *args],
        cwd=REPO_ROOT,
        check=True,
        timeout=timeout,
        capture_output=True,
    )


def test_bench_speed_tiny(tmp_path):
    run(
        "bench_speed.py",
        "--tiny",
        "--out",
        str(tmp_path),
        "--cfg",
        "--profile",
        "--repeats",
        "1",
        "--chunks",
        "distilled-later",
        "full-later",
        "--full-steps",
        "2",
    )
    rows = json.loads((tmp_path / "bench_speed.json").read_text())["rows"]
    passes = {(r["variant"], r["frames"], r["batch"]) for r in rows if r["kind"] == "pass" and "seconds" in r}
    assert {("eager", 18, 1), ("compiled", 18, 2), ("fp8", 18, 1)} <= passes
    errors = {r["variant"]: r for r in rows if r["kind"] == "pass_error" and r["frames"] == 18 and r["batch"] == 1}
    assert errors["compiled"]["rel_l2"] < 1e-5 < errors["fp8"]["rel_l2"] < 0.1  # fp8 approximates, compile doesn't
    assert any(r["kind"] == "cached_pass" for r in rows)
    assert any(r["kind"] == "profile" and r["seconds"]["attention"] > 0 for r in rows)
    full = next(r for r in rows if r["kind"] == "chunk" and r["chunk"] == "full-later")
    assert full["steps"] == 2 and full["estimate_50_steps_s"] > full["seconds"]


def test_bench_parallel_tiny(tmp_path):
    run(
        "bench_parallel.py",
        "--tiny",
        "--gpus",
        "2",
        "1",
        "--head-chunks",
        "1",
        "3",
        "--chunks",
        "distilled-later",
        "--profile",
        "--pack-placement",
        "--out",
        str(tmp_path),
    )
    rows = json.loads((tmp_path / "bench_parallel.json").read_text())["rows"]
    exact = [
        r
        for r in rows
        if r["kind"] == "pass" and r.get("gpus") == 2 and r["variant"] == "exact" and "rel_l2_vs_1gpu" in r
    ]
    assert [r["rows"] for r in exact] == [1, 2]
    assert exact[0]["rel_l2_vs_1gpu"] == 0.0  # sequence parallel: bit-exact in fp32
    assert exact[1]["rel_l2_vs_1gpu"] < 1e-6  # guidance parallel: GEMM rounding only
    overlap = [r for r in rows if r["kind"] == "head_chunks"]
    assert [r["head_chunks"] for r in overlap] == [1, 3] and all(r["rel_l2_vs_1gpu"] == 0.0 for r in overlap)
    assert any(r["kind"] == "head_chunks_chosen" for r in rows)
    placements = [r for r in rows if r["kind"] == "pack_placement"]
    assert [r["in_graph"] for r in placements] == [True, False] and all(r["seconds"] > 0 for r in placements)
    assert next(r for r in rows if r["kind"] == "pack_placement_same_output")["value"] is True
    profile = next(r for r in rows if r["kind"] == "profile")
    assert profile["gpus"] == 2 and profile["wall_s"] > 0 and isinstance(profile["kernel_s"], dict)
    for gpus in (2, 1):
        chunks = [r for r in rows if r["kind"] == "chunk" and r["gpus"] == gpus]
        assert [r["go_fast"] for r in chunks] == [False, True] and all(r["seconds"] > 0 for r in chunks)
        assert any(r["kind"] == "decode" and r["gpus"] == gpus and r["seconds"] > 0 for r in rows)


def test_bench_prediction_tiny(tmp_path):
    run(
        "bench_prediction.py",
        *("--tiny", "--gpus", "2", "--chunks", "2", "--log-steps", "--out", str(tmp_path)),
        *("--variants", "all_tiles", "inline", "ahead"),
    )
    rows = json.loads((tmp_path / "bench_prediction.json").read_text())["rows"]
    runs = [r for r in rows if r["kind"] == "prediction"]
    assert [r["variant"] for r in runs] == ["inline", "ahead", "all_tiles"]  # always in this order
    assert all(len(r["chunk_intervals_s"]) == 2 and r["later_chunk_mean_s"] > 0 for r in runs)
    assert all(len(r["denoise_s"]) == len(r["decode_s"]) == 2 and min(r["denoise_s"] + r["decode_s"]) > 0 for r in runs)
    assert next(r for r in rows if r["kind"] == "same_outputs")["value"] is True
    assert next(r for r in rows if r["kind"] == "writes_alone")["seconds"] > 0


def test_bench_exchange_tiny(tmp_path):
    run("bench_exchange.py", "--tiny", "--gpus", "2", "--groups", "1", "2", "--out", str(tmp_path))
    rows = json.loads((tmp_path / "bench_exchange.json").read_text())["rows"]
    assert [(r["gpus"], r["groups"], r["backend"]) for r in rows] == [(2, 1, "gloo"), (2, 2, "gloo")]
    assert all(r["nccl_ms"] > 0 and r["attention_ms"] > 0 for r in rows)  # the all-to-all and attention ran
    assert all("no peer memory" in r["pull_error"] for r in rows)  # pulls need GPUs; recorded, not fatal


def test_bench_go_fast_tiny(tmp_path):
    """On CPU "sage" and "fa3-fp8" run their emulations: the script's plumbing, not the kernels' numbers."""
    run("bench_go_fast.py", "--tiny", "--eager", "--out", str(tmp_path))
    rows = json.loads((tmp_path / "bench_go_fast.json").read_text())["rows"]
    calls = {(r["tokens"], r["keys"], r["method"]): r for r in rows if r["kind"] == "call"}
    assert len(calls) == 2 * 3 * 4 and not any("error" in r for r in calls.values())
    for tokens in (300, 170):
        assert calls[(tokens, "random", "sdpa")]["rel_l2"] < 0.01 < calls[(tokens, "random", "sage")]["rel_l2"] < 0.06
        assert calls[(tokens, "random", "sage-emulated")]["rel_l2_vs_kernel"] == 0.0  # on CPU both are the emulation
        strong = calls[(tokens, "outliers-strong", "fa3-fp8")]["rel_l2"]
        assert strong > 2 * calls[(tokens, "outliers-strong", "sage")]["rel_l2"]
    passes = {(r["frames"], r["rows"], r["variant"]): r for r in rows if r["kind"] == "pass"}
    assert set(passes) == {
        (f, n, v) for f, n in ((18, 1), (10, 1), (18, 2)) for v in ("exact", "fp8", "fp8+sage", "fp8+fa3-fp8")
    }
    assert all(0 < r["rel_l2"] < 0.2 for key, r in passes.items() if key[2] != "exact")
    chunks = {r["variant"]: r for r in rows if r["kind"] == "chunk"}
    assert set(chunks) == {"exact", "fp8", "fp8+sage", "fp8+fa3-fp8"} and chunks["exact"]["steps"] == 8
    assert all(r["frames_psnr_db"] > 20 and r["latents_rel_l2"] > 0 for v, r in chunks.items() if v != "exact")
    assert "| fp8+sage |" in (tmp_path / "bench_go_fast.md").read_text()


def test_bench_cold_start_tiny(tmp_path):
    out = tmp_path / "out"
    run("bench_cold_start.py", "--tiny", "--dir", str(tmp_path / "weights"), "--out", str(out))
    rows = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert set(rows) == {"generate", "convert", "probe-default", "probe-host-register", "cold", "prepare"} | {
        "prepared",
        "fetch",
    }
    assert all(row["returncode"] == 0 for row in rows.values())
    for phase in ("cold", "prepared"):  # READY, then a first request of two chunks
        assert rows[phase]["ready_s"] > rows[phase]["import_s"] and len(rows[phase]["first_request_chunk_s"]) == 2
        assert len(rows[phase]["first_request_encode_s"]) == 1
    assert len(rows["prepared"]["go_fast_request"]["chunk_s"]) == 2  # the same request with go_fast, after it
    assert rows["prepare"]["files"] > 10 and rows["fetch"]["fetched_bytes"] == rows["prepare"]["bytes"]
    hub = rows["fetch"]["huggingface_hub_single_stream"]  # the largest fetched file again, one stream
    assert hub["bytes"] == max(e["size"] for e in _manifest_files(tmp_path / "weights")) and hub["seconds"] >= 0
    assert rows["probe-host-register"]["alloc_conf"].startswith("pinned_use_cuda_host_register")


def test_bench_cold_start_extrapolates_the_conversion_on_a_small_disk(tmp_path):
    """With too little disk for the .pt and its safetensors copy, part of the .pt is converted and the
    time scaled (the GPU machine's 64 GiB disk may not hold 2 × 25.6 GB)."""
    out = tmp_path / "out"
    args = ("--tiny", "--dir", str(tmp_path / "weights"), "--out", str(out), "--free-gb", "2.0025")
    run("bench_cold_start.py", *args, "--phases", "generate,convert")
    convert = json.loads((out / "convert.json").read_text())
    assert convert["returncode"] == 0 and convert["convert_s"] is None
    assert 0 < convert["partial_pt_bytes"] < convert["full_pt_bytes"] and convert["convert_s_extrapolated"] >= 0


def _manifest_files(weights_dir):
    return json.loads((weights_dir / "gamecraft-manifest.json").read_text())["files"].values()
