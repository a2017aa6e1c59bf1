"""Checkpoint loading: full-size key set, strict rejection, unsafe pickles, cache, dtype policy."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import gamecraft.weights.transformer as loading
from gamecraft.model import GameCraftTransformer, TransformerConfig, parameter_dtype, random_state_dict
from gamecraft.weights import (
    CheckpointError,
    CheckpointMismatchError,
    cache_path_for,
    expected_shapes,
    load_transformer,
    read_official_checkpoint,
    save_official_checkpoint,
)
from gamecraft.weights.transformer import cache_is_current, write_safetensors

TINY = TransformerConfig.tiny()


@pytest.fixture(scope="module")
def full_keys(golden_dir):
    return json.loads((golden_dir / "full_model_keys.json").read_text())["transformer"]


@pytest.fixture(scope="module")
def tiny_weights():
    return random_state_dict(TINY, seed=3)


@pytest.fixture()
def tiny_checkpoint(tmp_path, tiny_weights):
    return save_official_checkpoint(tiny_weights, tmp_path / "mp_rank_00_model_states.pt")


# ----------------------------------------------------------------------------------------------
# Full-size structure (meta device, no weights)
# ----------------------------------------------------------------------------------------------


def test_full_size_keys_shapes_and_parameter_count(full_keys):
    config = TransformerConfig.from_golden(full_keys["config"])
    model = GameCraftTransformer(config, dtype=torch.bfloat16, device="meta")
    ours = {k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}
    official = {p["name"]: (p["shape"], p["dtype_at_construction"]) for p in full_keys["parameters"]}
    assert list(ours) == list(official)  # same names, same order
    assert ours == official  # same shapes and construction dtypes
    assert sum(p.numel() for p in model.parameters()) == full_keys["num_parameters"]
    assert len(ours) == full_keys["num_tensors"]
    assert not list(model.buffers()) and not full_keys["buffers"]
    for top, count in full_keys["params_by_top_module"].items():
        assert sum(p.numel() for p in getattr(model, top).parameters()) == count, top


def test_dtype_policy_matches_reference_construction(full_keys):
    for p in full_keys["parameters"]:
        assert str(parameter_dtype(p["name"], torch.bfloat16)).removeprefix("torch.") == p["dtype_at_construction"]


def test_loaded_model_follows_dtype_policy(tiny_checkpoint):
    model = load_transformer(tiny_checkpoint, TINY, dtype=torch.bfloat16, use_cache=False)
    for name, param in model.named_parameters():
        fp32 = name.startswith(("final_layer.linear.", "camera_net."))
        assert param.dtype == (torch.float32 if fp32 else torch.bfloat16), name
        assert not param.requires_grad and param.device.type == "cpu"


# ----------------------------------------------------------------------------------------------
# Strict loading and rejection
# ----------------------------------------------------------------------------------------------


def test_golden_checkpoint_loads_to_golden_weights(golden_dir):
    config = TransformerConfig.from_golden(json.loads((golden_dir / "transformer.json").read_text())["config"])
    model = load_transformer(
        golden_dir / "transformer_tiny_mp_rank_00_model_states.pt", config, dtype=torch.float32, use_cache=False
    )
    golden = load_file(golden_dir / "transformer_tiny_weights.safetensors")
    state = model.state_dict()
    assert set(state) == set(golden)
    for key, value in golden.items():
        assert torch.equal(state[key], value), key


def test_ema_container_is_accepted(tmp_path, tiny_weights):
    path = save_official_checkpoint(tiny_weights, tmp_path / "ema.pt", key="ema")
    state = read_official_checkpoint(path)
    assert all(torch.equal(state[k], v) for k, v in tiny_weights.items())


def _expect_mismatch(path, *fragments):
    with pytest.raises(CheckpointMismatchError) as info:
        load_transformer(path, TINY, dtype=torch.float32, use_cache=False)
    assert isinstance(info.value, ValueError)
    for fragment in fragments:
        assert fragment in str(info.value)
    return info.value


def test_rejects_missing_key(tmp_path, tiny_weights):
    weights = dict(tiny_weights)
    del weights["double_blocks.1.txt_mlp.fc2.bias"]
    err = _expect_mismatch(
        save_official_checkpoint(weights, tmp_path / "m.pt"), "1 missing keys", "double_blocks.1.txt_mlp.fc2.bias"
    )
    assert err.missing == ["double_blocks.1.txt_mlp.fc2.bias"] and not err.unexpected and not err.mismatched


def test_rejects_unexpected_key(tmp_path, tiny_weights):
    weights = dict(tiny_weights, **{"guidance_in.mlp.0.weight": torch.zeros(64, 256)})
    err = _expect_mismatch(
        save_official_checkpoint(weights, tmp_path / "u.pt"), "1 unexpected keys", "guidance_in.mlp.0.weight"
    )
    assert err.unexpected == ["guidance_in.mlp.0.weight"] and not err.missing


def test_rejects_wrong_shape(tmp_path, tiny_weights):
    weights = dict(tiny_weights, **{"img_in.proj.weight": torch.zeros(64, 16, 1, 2, 2)})
    err = _expect_mismatch(
        save_official_checkpoint(weights, tmp_path / "s.pt"),
        "mismatched",
        "img_in.proj.weight: (64, 16, 1, 2, 2) vs (64, 33, 1, 2, 2)",
    )
    assert [k for k, _, _ in err.mismatched] == ["img_in.proj.weight"]


class _RunsCodeOnLoad:
    """Unpickling this would call os.system -- weights_only loading must refuse it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _CustomClass:
    pass


@pytest.mark.parametrize("payload", ["reduce", "class"])
def test_rejects_pickles_that_need_code_execution(tmp_path, tiny_weights, payload):
    marker = tmp_path / "code_was_executed"
    evil = _RunsCodeOnLoad(marker) if payload == "reduce" else _CustomClass()
    path = tmp_path / "evil.pt"
    torch.save({"module": dict(tiny_weights, extra=evil)}, path)
    with pytest.raises(CheckpointError, match="refusing to load .*unrestricted unpickling"):
        load_transformer(path, TINY, dtype=torch.float32, use_cache=False)
    assert not marker.exists()


def test_rejects_unknown_container_and_non_tensor_values(tmp_path, tiny_weights):
    path = tmp_path / "c.pt"
    torch.save({"state_dict": tiny_weights}, path)
    with pytest.raises(CheckpointError, match="no 'module' or 'ema' entry"):
        read_official_checkpoint(path)
    torch.save({"module": dict(tiny_weights, step=3)}, path)
    with pytest.raises(CheckpointError, match="non-tensor entries.*step"):
        read_official_checkpoint(path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        read_official_checkpoint(path)


# ----------------------------------------------------------------------------------------------
# safetensors cache
# ----------------------------------------------------------------------------------------------


def test_cache_round_trip_uses_the_cache(tiny_checkpoint, tiny_weights, monkeypatch):
    first = load_transformer(tiny_checkpoint, TINY, dtype=torch.float32)
    cache = cache_path_for(tiny_checkpoint)
    assert cache.is_file() and cache.parent == tiny_checkpoint.parent

    def no_pt(*args, **kwargs):
        raise AssertionError("the .pt was read although a valid cache exists")

    monkeypatch.setattr(loading, "read_official_checkpoint", no_pt)
    second = load_transformer(tiny_checkpoint, TINY, dtype=torch.float32)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=False):
        assert torch.equal(a, b) and torch.equal(a, tiny_weights[name].float()), name


def test_cache_in_a_separate_dir_and_stale_cache_is_replaced(tiny_checkpoint, tmp_path):
    cache_dir = tmp_path / "cache"
    load_transformer(tiny_checkpoint, TINY, dtype=torch.float32, cache_dir=cache_dir)
    cache = cache_path_for(tiny_checkpoint, cache_dir)
    assert cache.parent == cache_dir and cache.is_file()
    # A newer .pt with other weights must win over the old cache (and rewrite it).
    newer = random_state_dict(TINY, seed=99)
    save_official_checkpoint(newer, tiny_checkpoint)
    later = cache.stat().st_mtime_ns + 10**9
    os.utime(tiny_checkpoint, ns=(later, later))
    model = load_transformer(tiny_checkpoint, TINY, dtype=torch.float32, cache_dir=cache_dir)
    assert torch.equal(model.state_dict()["img_in.proj.weight"], newer["img_in.proj.weight"])
    assert torch.equal(load_file(cache)["img_in.proj.weight"], newer["img_in.proj.weight"])


def test_cache_is_current_agrees_with_what_the_loader_reads(tiny_checkpoint, tmp_path, monkeypatch):
    """``cache_is_current`` (header only) is True exactly when loading would read the cache and write
    nothing: the multi-GPU start lets several processes load at once only then."""
    cache_dir = tmp_path / "cache"
    assert not cache_is_current(tiny_checkpoint, TINY, cache_dir=cache_dir)  # no cache yet
    load_transformer(tiny_checkpoint, TINY, dtype=torch.float32, cache_dir=cache_dir)
    assert cache_is_current(tiny_checkpoint, TINY, cache_dir=cache_dir)
    assert not cache_is_current(tiny_checkpoint, TINY, cache_dir=tmp_path / "elsewhere")
    assert not cache_is_current(tiny_checkpoint, TINY, cache_dir=cache_dir, key="module")  # other source key
    other = dataclasses.replace(TINY, depth_single_blocks=TINY.depth_single_blocks + 1)
    assert not cache_is_current(tiny_checkpoint, other, cache_dir=cache_dir)  # other key set
    cache = cache_path_for(tiny_checkpoint, cache_dir)

    def no_write(*args, **kwargs):
        raise AssertionError("the loader wrote although the cache was current")

    monkeypatch.setattr(loading, "write_safetensors", no_write)
    load_transformer(tiny_checkpoint, TINY, dtype=torch.float32, cache_dir=cache_dir)  # reads only
    later = cache.stat().st_mtime_ns + 10**9
    os.utime(tiny_checkpoint, ns=(later, later))  # a newer .pt: the cache is stale
    assert not cache_is_current(tiny_checkpoint, TINY, cache_dir=cache_dir)
    os.utime(tiny_checkpoint, ns=(later - 2 * 10**9,) * 2)
    assert cache_is_current(tiny_checkpoint, TINY, cache_dir=cache_dir)
    cache.write_bytes(cache.read_bytes()[:100])  # truncated
    assert not cache_is_current(tiny_checkpoint, TINY, cache_dir=cache_dir)


def test_write_safetensors_is_readable_by_safetensors(tmp_path):
    tensors = {
        "a": torch.randn(3, 5).bfloat16(),
        "b": torch.arange(7),
        "c": torch.zeros(0, 4),
        "d": torch.randn(3, 4).double().t(),
        "e": torch.tensor([True, False]),
    }
    write_safetensors(tmp_path / "x.safetensors", tensors, {"k": "v"})
    back = load_file(tmp_path / "x.safetensors")
    assert set(back) == set(tensors)
    for key, value in tensors.items():
        assert back[key].dtype == value.dtype and torch.equal(back[key], value), key


# ----------------------------------------------------------------------------------------------
# Random official-layout weights
# ----------------------------------------------------------------------------------------------


def test_random_state_dict_layout_and_init_rule(tiny_weights):
    shapes = expected_shapes(TINY)
    assert list(tiny_weights) == list(shapes)
    assert all(tuple(v.shape) == shapes[k] for k, v in tiny_weights.items())
    matrix = tiny_weights["txt_in.input_embedder.weight"]  # [64, 64]
    assert abs(matrix.std().item() - 1 / math.sqrt(matrix.shape[1])) < 0.02
    conv = tiny_weights["camera_net.encode_first.0.weight"]  # [192, 384, 1, 1]
    assert abs(conv.std().item() - 1 / math.sqrt(384)) < 0.005
    norms = torch.cat([v for k, v in tiny_weights.items() if v.ndim == 1 and not k.endswith("bias")])
    biases = torch.cat([v for k, v in tiny_weights.items() if k.endswith("bias")])
    assert abs(norms.mean().item() - 1) < 0.02 and abs(norms.std().item() - 0.1) < 0.02
    assert abs(biases.mean().item()) < 0.01 and abs(biases.std().item() - 0.1) < 0.01
    again = random_state_dict(TINY, seed=3)
    assert all(torch.equal(again[k], v) for k, v in tiny_weights.items())
    assert not torch.equal(random_state_dict(TINY, seed=4)["img_in.proj.weight"], tiny_weights["img_in.proj.weight"])


def test_random_state_dict_dtype_policy():
    weights = random_state_dict(TINY, seed=0, dtype=torch.bfloat16)
    for name, value in weights.items():
        assert value.dtype == parameter_dtype(name, torch.bfloat16), name
