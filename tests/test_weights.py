"""Weights layout: the tiny writer, loading it through the production loaders, checks and download."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPModel, LlavaForConditionalGeneration

from gamecraft.testing.__main__ import main as write_tiny_cli
from gamecraft.testing.tiny_weights import write_tiny_weights
from gamecraft.weights import (
    DEFAULT_LAYOUT,
    TRANSFORMER_CONFIG_FILE,
    VARIANTS,
    MissingWeightsError,
    check_layout,
    download_weights,
    transformer_config,
)
from gamecraft.weights.__main__ import main as weights_main
from gamecraft.weights.text import load_text_encoders
from gamecraft.weights.vae import load_vae


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    rng_state = torch.random.get_rng_state()
    path = write_tiny_weights(tmp_path_factory.mktemp("weights"), seed=0)
    assert torch.equal(torch.random.get_rng_state(), rng_state), "the writer must not use the global RNG"
    return path


def test_tiny_directory_is_complete_in_the_official_layout(tiny_dir):
    for variant in VARIANTS:
        check_layout(tiny_dir, variant)
    assert (tiny_dir / "gamecraft_models/mp_rank_00_model_states.pt").is_file()
    assert (tiny_dir / "gamecraft_models/mp_rank_00_model_states_distill.pt").is_file()
    assert (tiny_dir / "stdmodels/vae_3d/hyvae/config.json").is_file()
    container = torch.load(tiny_dir / DEFAULT_LAYOUT.transformer("full"), weights_only=True)
    assert set(container) == {"module"}
    vae = torch.load(tiny_dir / DEFAULT_LAYOUT.vae_weights, weights_only=True)
    assert vae and all(key.startswith("vae.") for key in vae)


def test_tiny_vae_loads_and_runs(tiny_dir):
    vae = load_vae(tiny_dir, DEFAULT_LAYOUT, device="cpu", dtype=torch.float32)
    latents = vae.encode_image(torch.zeros(1, 3, 1, 48, 64), torch.Generator().manual_seed(0))
    assert latents.shape == (1, 16, 1, 6, 8)
    frames = vae.decode(torch.zeros(1, 16, 9, 6, 8))
    assert frames.shape == (1, 3, 33, 48, 64) and torch.isfinite(frames).all()


def test_tiny_text_encoders_load_and_match_the_transformer(tiny_dir):
    encoders = load_text_encoders(tiny_dir, DEFAULT_LAYOUT, device="cpu", dtype=torch.float32)
    assert encoders.crop_start == 95  # one token per Llama-3 pre-token, as with the real vocabulary
    config = transformer_config(tiny_dir)
    embeddings = encoders.encode_prompts("A charming medieval village under a bright blue sky.")
    assert embeddings.text_states.shape == (2, 256, config.text_states_dim)
    assert embeddings.text_states_2.shape == (2, config.text_states_dim_2)
    assert embeddings.text_mask.sum(1).tolist() == [7, 17]  # "" → eot + 6 suffix tokens; prompt → 10 more
    tokens = encoders.tokenize_llm(["A charming village"])["input_ids"][0]
    assert encoders.llm_tokenizer.unk_token_id not in tokens.tolist()


def test_tiny_folders_load_with_plain_transformers(tiny_dir):
    _, info = LlavaForConditionalGeneration.from_pretrained(
        str(tiny_dir / DEFAULT_LAYOUT.llava_dir), output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    _, info = CLIPModel.from_pretrained(str(tiny_dir / DEFAULT_LAYOUT.clip_dir), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_tiny_transformer_loads_through_the_model_package(tiny_dir):
    from gamecraft.model import TransformerConfig
    from gamecraft.weights import load_transformer

    config = transformer_config(tiny_dir)
    assert config == TransformerConfig.tiny()
    for variant in VARIANTS:
        model = load_transformer(
            tiny_dir / DEFAULT_LAYOUT.transformer(variant), config, dtype=torch.float32, use_cache=False
        )
        assert sum(p.numel() for p in model.parameters()) > 0


def test_real_directories_default_to_the_production_transformer(tmp_path):
    from gamecraft.model import TransformerConfig

    assert transformer_config(tmp_path) == TransformerConfig.production()


def test_writer_is_deterministic_per_seed(tiny_dir, tmp_path):
    same = write_tiny_weights(tmp_path / "a", seed=0)
    other = write_tiny_weights(tmp_path / "b", seed=1)
    rel = f"{DEFAULT_LAYOUT.llava_dir}/model.safetensors"
    expected = load_file(str(tiny_dir / rel))
    assert all(torch.equal(v, expected[k]) for k, v in load_file(str(same / rel)).items())
    assert any(not torch.equal(v, expected[k]) for k, v in load_file(str(other / rel)).items())
    for rel in (
        f"{DEFAULT_LAYOUT.llava_dir}/tokenizer.json",
        f"{DEFAULT_LAYOUT.clip_dir}/vocab.json",
        f"{DEFAULT_LAYOUT.clip_dir}/merges.txt",
        DEFAULT_LAYOUT.vae_config,
    ):
        assert (same / rel).read_bytes() == (tiny_dir / rel).read_bytes()


# -- layout checks -----------------------------------------------------------------------------
def test_missing_files_are_named_with_their_expected_paths(tiny_dir, tmp_path):
    copy = tmp_path / "w"
    shutil.copytree(tiny_dir, copy)
    (copy / DEFAULT_LAYOUT.vae_weights).unlink()
    (copy / DEFAULT_LAYOUT.clip_dir / "merges.txt").unlink()
    with pytest.raises(MissingWeightsError) as err:
        check_layout(copy, "full")
    message = str(err.value)
    assert "2 missing" in message
    assert "VAE weights: expected stdmodels/vae_3d/hyvae/pytorch_model.pt" in message
    assert str(copy / DEFAULT_LAYOUT.vae_weights) in message
    assert "CLIP merges: expected stdmodels/openai_clip-vit-large-patch14/merges.txt" in message
    with pytest.raises(FileNotFoundError, match="pytorch_model.pt"):
        load_vae(copy)


def test_variant_checks_only_its_own_transformer(tiny_dir, tmp_path):
    copy = tmp_path / "w"
    shutil.copytree(tiny_dir, copy)
    (copy / DEFAULT_LAYOUT.transformer("distilled")).unlink()
    check_layout(copy, "full")
    with pytest.raises(MissingWeightsError, match="mp_rank_00_model_states_distill.pt"):
        check_layout(copy, "distilled")
    with pytest.raises(ValueError, match="unknown weights variant"):
        check_layout(copy, "turbo")


def test_missing_llava_shard_is_named(tiny_dir, tmp_path):
    copy = tmp_path / "w"
    shutil.copytree(tiny_dir, copy)
    llava = copy / DEFAULT_LAYOUT.llava_dir
    (llava / "model.safetensors").rename(llava / "model-00001-of-00002.safetensors")
    (llava / "model.safetensors.index.json").write_text(
        '{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}'
    )
    with pytest.raises(MissingWeightsError, match="model-00002-of-00002.safetensors") as err:
        check_layout(copy, "full")
    assert "model-00001" not in str(err.value)


# -- download ----------------------------------------------------------------------------------
def test_download_requests_only_what_the_variant_needs(tiny_dir, tmp_path, monkeypatch):
    calls = []

    def fake_snapshot_download(repo_id, allow_patterns, local_dir, token=None, revision=None):
        calls.append(dict(repo_id=repo_id, allow_patterns=list(allow_patterns), token=token))
        shutil.copytree(tiny_dir, local_dir, dirs_exist_ok=True)
        return local_dir

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot_download)
    assert download_weights(tmp_path / "w", ["distilled"], token="hf_x") == tmp_path / "w"
    (call,) = calls
    assert call["repo_id"] == "tencent/Hunyuan-GameCraft-1.0" and call["token"] == "hf_x"
    patterns = call["allow_patterns"]
    assert "gamecraft_models/mp_rank_00_model_states_distill.pt" in patterns
    assert "gamecraft_models/mp_rank_00_model_states.pt" not in patterns
    assert {"stdmodels/vae_3d/hyvae/pytorch_model.pt", "stdmodels/vae_3d/hyvae/config.json"} <= set(patterns)
    assert not any(p.endswith((".bin", ".h5", ".msgpack", "*")) for p in patterns)

    calls.clear()
    download_weights(tmp_path / "w", ["full", "distilled", "full"])
    transformer_patterns = [p for p in calls[0]["allow_patterns"] if p.startswith("gamecraft_models/")]
    assert sorted(transformer_patterns) == sorted(DEFAULT_LAYOUT.transformer(v) for v in VARIANTS)


def test_incomplete_download_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.snapshot_download", lambda **kwargs: kwargs["local_dir"])
    with pytest.raises(MissingWeightsError, match="transformer \\(full\\)"):
        download_weights(tmp_path / "empty", ["full"])


# -- CLI ---------------------------------------------------------------------------------------
def test_cli_write_tiny_and_check(tmp_path, capsys):
    assert write_tiny_cli(["write-tiny", str(tmp_path / "w"), "--seed", "3"]) == 0
    assert (tmp_path / "w" / TRANSFORMER_CONFIG_FILE).is_file()
    assert weights_main(["check", str(tmp_path / "w"), "--variant", "distilled"]) == 0
    (tmp_path / "w" / DEFAULT_LAYOUT.vae_config).unlink()
    assert weights_main(["check", str(tmp_path / "w")]) == 1
    assert "VAE config" in capsys.readouterr().err
