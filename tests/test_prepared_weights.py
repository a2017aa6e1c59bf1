"""A prepared weights directory (issue 27) on a tiny model on the CPU, compiled with Inductor for real:
``prepare`` stores the compiled kernels and a manifest; a fresh process that loads them compiles nothing
(Inductor's and AOT-autograd's cache counters: hits only); kernels made for another machine are refused
with the reason in one log line, and that process compiles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gamecraft.testing.tiny_weights import write_tiny_weights
from gamecraft.weights.manifest import MANIFEST_NAME, read_manifest, sha256_of

ROOT = Path(__file__).resolve().parents[1]

# One process: plan a tiny CPU engine with Inductor-compiled blocks (the CPU's plan does not compile), then
# prepare (argv[2] == "prepare") or build it as setup() does, and print Inductor's cache counters.
CHILD = r"""
import json, logging, sys
from dataclasses import replace
from pathlib import Path
from torch._dynamo.utils import counters
from gamecraft.serving.build import build_service
from gamecraft.serving.plan import plan_service
from gamecraft.serving.config import ServingConfig
from gamecraft.serving.prepare import prepare_directory

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
weights, mode = Path(sys.argv[1]), sys.argv[2]
config = ServingConfig(weights="tiny", tiny_dir=weights, tiny_size=(32, 48), warm_presets=("distilled",))
plan = plan_service(config, device=None)
plan = replace(plan, engine_config=replace(plan.engine_config, compile=True))
if mode == "prepare":
    prepare_directory(config, ["distilled"], plan=plan, hash_threads=2)
else:
    build_service(config, plan=plan).close()
print("COUNTERS " + json.dumps({k: dict(counters[k]) for k in ("inductor", "aot_autograd")}))
"""


def _run(weights: Path, mode: str, cache: Path) -> tuple[dict, str]:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache), "TRITON_CACHE_DIR": str(cache / "triton")}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(weights), mode], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("COUNTERS "))
    return json.loads(line.removeprefix("COUNTERS ")), done.stderr


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    weights = write_tiny_weights(tmp_path_factory.mktemp("tiny-prepared"))
    counters, _ = _run(weights, "prepare", tmp_path_factory.mktemp("inductor-prepare"))
    assert counters["inductor"].get("fxgraph_cache_miss", 0) > 0  # prepare compiled
    return weights


def test_prepare_writes_a_manifest_of_every_file_and_the_kernels(prepared):
    manifest = read_manifest(prepared)
    assert manifest.kernels == "compiled/kernels.bin"
    assert manifest.machine["torch"] and manifest.machine["gpu"].startswith("cpu")
    assert "stdmodels/vae_3d/hyvae/pytorch_model.pt" in manifest.files
    # the transformer is read through its safetensors copy: the .pt is a stand-in of its size
    pt = "gamecraft_models/mp_rank_00_model_states_distill.pt"
    assert manifest.stand_ins == {pt: (prepared / pt).stat().st_size}
    assert "gamecraft_models/mp_rank_00_model_states_distill.safetensors" in manifest.files
    for rel, entry in manifest.files.items():  # checked independently of the code that wrote them
        assert (prepared / rel).stat().st_size == entry.size
        assert sha256_of(prepared / rel) == entry.sha256


def test_a_fresh_process_loads_the_kernels_and_compiles_nothing(prepared, tmp_path):
    counters, log = _run(prepared, "serve", tmp_path / "inductor")
    assert "compiled kernels loaded" in log
    assert counters["inductor"].get("fxgraph_cache_miss", 0) == 0, counters
    assert counters["inductor"].get("fxgraph_cache_hit", 0) > 0, counters
    assert counters["aot_autograd"].get("autograd_cache_miss", 0) == 0, counters


def test_kernels_for_another_torch_are_refused_in_one_line_and_the_warm_up_compiles(prepared, tmp_path):
    other = tmp_path / "weights"
    subprocess.run(["cp", "-r", str(prepared), str(other)], check=True)
    manifest = json.loads((other / MANIFEST_NAME).read_text())
    manifest["machine"]["torch"] = "2.0.0"
    (other / MANIFEST_NAME).write_text(json.dumps(manifest))
    counters, log = _run(other, "serve", tmp_path / "inductor")
    refusal = [line for line in log.splitlines() if "compiled kernels not loaded" in line]
    assert len(refusal) == 1 and "torch 2.0.0 there" in refusal[0], log[-2000:]
    assert counters["inductor"].get("fxgraph_cache_miss", 0) > 0  # compiled, as without the kernels
