"""One configuration and one builder: ServingConfig.from_env, the CLI's flags on the same fields, the plan
both build from, and the compile fallback of the warm-up."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from gamecraft.__main__ import serving_config
from gamecraft.engine import EngineConfig, GameCraftEngine
from gamecraft.serving import build
from gamecraft.serving import plan as plan_module
from gamecraft.serving.config import ConfigError, ServingConfig
from gamecraft.serving.devices import DeviceInfo
from gamecraft.serving.plan import plan_service
from gamecraft.testing.tiny_weights import write_tiny_weights

H100 = DeviceInfo("NVIDIA H100 80GB HBM3", (9, 0), 80 * 2**30, count=2, nvlink=True)


def test_from_env_reads_every_variable():
    env = {
        "GAMECRAFT_WEIGHTS": "/w",
        "GAMECRAFT_PRELOAD": "full, distilled",
        "GAMECRAFT_GPUS": "2",
        "GAMECRAFT_COMPILE": "0",
        "GAMECRAFT_ATTENTION": "sdpa-cudnn",
        "GAMECRAFT_TIME_BUDGET_S": "600",
        "GAMECRAFT_KEEP_BOTH": "1",
        "GAMECRAFT_DOWNLOAD": "0",
        "GAMECRAFT_WARM_GO_FAST": "0",
        "GAMECRAFT_TINY_SIZE": "32x48",
        "HF_TOKEN": "hf_secret",
        "GAMECRAFT_GPU": "L40S:8.9:44.4",
        "GAMECRAFT_VAE_COMPILE": "all",
    }
    config = ServingConfig.from_env(env)
    assert config == ServingConfig(
        weights="/w",
        preload=("full", "distilled"),
        gpus=2,
        compile=False,
        attention="sdpa-cudnn",
        time_budget_s=600.0,
        keep_both=True,
        download=False,
        warm_go_fast=False,
        tiny_size=(32, 48),
        hf_token="hf_secret",
        gpu_override="L40S:8.9:44.4",
        vae_compile="all",
    )
    assert "hf_secret" not in repr(config)
    assert ServingConfig.from_env({"COG_WEIGHTS": "/cog"}).weights == "/cog"
    assert ServingConfig.from_env({}) == ServingConfig()


@pytest.mark.parametrize(
    "env,message",
    [
        ({"GAMECRAFT_GPUS": "two"}, "GAMECRAFT_GPUS must be a number, got 'two'"),
        ({"GAMECRAFT_PRELOAD": "turbo"}, "GAMECRAFT_PRELOAD names unknown presets ['turbo']; expected distilled, full"),
        ({"GAMECRAFT_COMPILE": "maybe"}, "GAMECRAFT_COMPILE must be 0 or 1, got 'maybe'"),
        ({"GAMECRAFT_TINY_SIZE": "32 by 48"}, "GAMECRAFT_TINY_SIZE must look like 704x1216, got '32 by 48'"),
        ({"GAMECRAFT_TIME_BUDGET_S": "-5"}, "configuration: the time budget must be positive, got -5 s"),
        ({"GAMECRAFT_VAE_COMPILE": "edges"}, "configuration: vae_compile must be one of full, all, got 'edges'"),
    ],
)
def test_from_env_errors_name_the_variable(env, message):
    with pytest.raises(ValueError) as info:
        ServingConfig.from_env(env)
    assert str(info.value) == message


def _cli_args(**overrides) -> argparse.Namespace:
    args = dict(tiny=False, weights=None, size=None, gpus=None, go_fast=False, tiny_dir="/tmp/tiny", preset="distilled")
    return argparse.Namespace(**{**args, **overrides})


def test_the_cli_and_the_predictor_plan_the_same_engine(tmp_path, monkeypatch):
    """Same environment and weights, same preset: the same kernels, compilation, caches and placement."""
    weights = write_tiny_weights(tmp_path / "weights")
    env = {"GAMECRAFT_WEIGHTS": str(weights), "GAMECRAFT_PRELOAD": "distilled"}
    predictor = plan_service(ServingConfig.from_env(env), device=H100)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cli = plan_service(serving_config(_cli_args()), device=H100)
    assert cli.engine_config == predictor.engine_config and (cli.attention, cli.compile, cli.memory) == (
        predictor.attention,
        predictor.compile,
        predictor.memory,
    )
    assert (cli.source, cli.size, cli.world_size, cli.devices) == (
        predictor.source,
        predictor.size,
        2,
        ("cuda:0", "cuda:1"),
    )
    assert predictor.engine_config.compile and predictor.engine_config.cache_dir == weights / ".safetensors-cache"
    # the predictor warms both presets (the CLI warms its request's own shapes: tests/test_request_path.py)
    assert {s.rows for s in predictor.warm_shapes} == {1, 2}


def test_the_cli_falls_back_to_tiny_weights_and_says_why(tmp_path):
    config = serving_config(_cli_args(weights=tmp_path / "missing", tiny_dir=str(tmp_path / "t")))
    plan = plan_service(config, device=None)
    assert plan.source == "tiny" and plan.smoke_reason == "no CUDA GPU" and plan.engine_config.device == "cpu"
    plan = plan_service(config, device=H100)
    assert plan.source == "tiny" and plan.smoke_reason.startswith("weights incomplete")
    with pytest.raises(ConfigError, match="3 GPUs cannot split 2 attention heads evenly") as info:
        plan_service(replace(config, weights="tiny", gpus=3), device=None)
    assert info.value.option == "gpus" and info.value.value == 3


def test_a_broken_compiler_falls_back_to_eager(tmp_path, caplog):
    def broken_backend(graph, example_inputs):
        raise RuntimeError("no C compiler (fake)")

    weights = write_tiny_weights(tmp_path / "weights")
    config = replace(
        EngineConfig.for_cpu(weights, preload=("distilled",)), compile=True, compile_backend=broken_backend
    )
    engine = GameCraftEngine.load(config)
    plan = plan_service(ServingConfig(weights="tiny", tiny_dir=Path(weights), tiny_size=(32, 48)), device=None)
    warm = build.warm_up(engine, plan)
    assert not engine.compiled and set(warm.peak_bytes) == set(plan.warm_shapes)  # every shape ran
    assert set(warm.pass_seconds) == set(plan.timed_shapes)  # the preloaded preset's shapes were timed
    assert "compiling failed during the warm-up; running eagerly" in caplog.text


def test_an_out_of_memory_warm_up_is_not_taken_for_a_compiler_failure(tmp_path):
    """Running eagerly needs more memory, not less: the warm-up's fallback is for broken compilers only."""

    class Engine:
        compiled, disabled = True, False

        def warm_up(self, shapes, height, width, timed=None):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.46 GiB")

        def disable_compile(self):
            self.disabled = True

    weights = write_tiny_weights(tmp_path / "weights")
    plan = plan_service(ServingConfig(weights="tiny", tiny_dir=Path(weights), tiny_size=(32, 48)), device=None)
    engine = Engine()
    with pytest.raises(torch.OutOfMemoryError):
        build.warm_up(engine, plan)
    assert not engine.disabled


def test_a_card_that_runs_guidance_rows_one_at_a_time_warms_only_one_row_passes(monkeypatch):
    l40s = DeviceInfo("NVIDIA L40S", (8, 9), 46068 * 2**20)
    monkeypatch.setattr(plan_module, "probe_host_memory", lambda: 65 * 10**9)  # Replicate's L40S host, not this one
    plan = plan_service(ServingConfig(weights="random"), device=l40s)
    assert plan.engine_config.rows_at_once == 1 and plan.engine_config.fp8_twin == "replace"
    assert {shape.rows for shape in plan.warm_shapes} == {1} and any(shape.go_fast for shape in plan.warm_shapes)


def test_the_vae_compile_scope_reaches_the_engine(tmp_path):
    h200 = DeviceInfo("NVIDIA H200", (9, 0), 143771 * 2**20)
    for scope in ("full", "all"):
        plan = plan_service(ServingConfig(weights="random", vae_compile=scope), device=h200)
        assert plan.engine_config.compile_vae and plan.engine_config.vae_compile_scope == scope
        assert build.random_engine_kwargs(plan)["vae_compile_scope"] == scope


def test_random_weights_with_both_presets_swap_two_transformers_where_the_plan_keeps_one(monkeypatch):
    """GAMECRAFT_WEIGHTS=random with both presets preloaded on an 80 GB card: each preset gets its own random
    transformer and the engine swaps them (preset_swap.py measures this); one preset, or a card that keeps
    both, shares one transformer."""
    from gamecraft.testing.random_weights import tiny_random_engine

    h100, h200 = (
        DeviceInfo("NVIDIA H100 80GB HBM3", (9, 0), 81559 * 2**20),
        DeviceInfo("NVIDIA H200", (9, 0), 143771 * 2**20),
    )
    monkeypatch.setattr(plan_module, "probe_host_memory", lambda: 256 * 10**9)
    both = ServingConfig(weights="random", preload=("distilled", "full"))
    swapping = build.random_engine_kwargs(plan_service(both, device=h100))
    assert swapping["one_transformer_on_gpu"] and swapping["distinct_variants"]
    for config, device in ((ServingConfig(weights="random"), h100), (both, h200)):
        kwargs = build.random_engine_kwargs(plan_service(config, device=device))
        assert not kwargs["one_transformer_on_gpu"] and not kwargs["distinct_variants"]

    shared = tiny_random_engine()
    assert shared.transformer("full") is shared.transformer("distilled")
    distinct = tiny_random_engine(distinct_variants=True)
    full, distilled = distinct.transformer("full"), distinct.transformer("distilled")
    assert full is not distilled
    assert not torch.equal(full.final_layer.linear.weight, distilled.final_layer.linear.weight)
