"""Text encoders: golden parity, CFG batch, negative prompt option, long prompts, checkpoint layouts."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPTokenizer, PreTrainedTokenizerFast

from gamecraft.model.text import PROMPT_SUFFIX, PROMPT_TEMPLATE, TextEncoderConfig, TextEncoders
from gamecraft.parity import load_manifest, load_tensors, run_sections
from gamecraft.weights.text import load_clip, load_llm

LLAVA = "llava-llama-3-8b-v1_1-transformers"
CLIP = "openai_clip-vit-large-patch14"


def _encoders(golden_dir, config: TextEncoderConfig | None = None) -> TextEncoders:
    config = config or TextEncoderConfig()
    tiny = golden_dir / "text_tiny"
    return TextEncoders(
        load_llm(tiny / LLAVA, dtype=torch.float32),
        PreTrainedTokenizerFast.from_pretrained(str(tiny / LLAVA)),
        load_clip(tiny / CLIP, dtype=torch.float32),
        CLIPTokenizer.from_pretrained(str(tiny / CLIP)),
        config,
    )


@pytest.fixture(scope="module")
def encoders(golden_dir) -> TextEncoders:
    return _encoders(golden_dir)


@pytest.fixture(scope="module")
def text_golden(golden_dir):
    return load_manifest(golden_dir, "text"), load_tensors(golden_dir, "text")


def test_parity_section_passes(golden_dir):
    results = run_sections(golden_dir, ["text"])
    assert len(results) > 20 and all(r.ok for r in results), [r.line() for r in results if not r.ok]


def test_crop_start_is_counted_from_the_template(encoders, text_golden):
    manifest, _ = text_golden
    assert encoders.crop_start == manifest["info"]["crop_start"]
    assert encoders.llm_max_length == manifest["info"]["llm_max_length"]
    assert encoders.llm_text("X") == PROMPT_TEMPLATE.format("X") + PROMPT_SUFFIX


def test_cfg_batch_matches_the_end_to_end_goldens(golden_dir, encoders, text_golden):
    """encode_prompts(cond) = [uncond "", cond], batched, as the reference's CFG text rows."""
    manifest, _ = text_golden
    e2e = load_tensors(golden_dir, "e2e")
    embeddings = encoders.encode_prompts(manifest["prompts"]["cond"])
    torch.testing.assert_close(embeddings.text_states, e2e["text_states"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(embeddings.text_states_2, e2e["text_states_2"], rtol=1e-4, atol=1e-4)
    assert torch.equal(embeddings.text_mask, e2e["text_mask"])
    assert embeddings.text_mask.dtype == torch.int64


def test_negative_prompt_option_encodes_it_in_the_uncond_row(encoders, text_golden):
    manifest, tensors = text_golden
    prompts = manifest["prompts"]
    embeddings = encoders.encode_prompts(prompts["cond"], negative_prompt=prompts["neg_prompt_text"])
    torch.testing.assert_close(
        embeddings.text_states[:1], tensors["llm/neg_prompt_text/prompt_embeds"], rtol=1e-4, atol=1e-4
    )
    torch.testing.assert_close(embeddings.text_states[1:], tensors["llm/cond/prompt_embeds"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(
        embeddings.text_states_2[:1], tensors["clip/neg_prompt_text/pooled"], rtol=1e-4, atol=1e-4
    )


def _valid_tail(encoders: TextEncoders, prompt: str, count: int) -> list[str]:
    tokens = encoders.tokenize_llm([prompt])
    valid = int(tokens["attention_mask"].sum())
    return encoders.llm_tokenizer.convert_ids_to_tokens(tokens["input_ids"][0, valid - count : valid].tolist())


def test_long_prompt_keeps_the_suffix(encoders, caplog):
    suffix_tokens = _valid_tail(encoders, "", 7)  # <|eot_id|> + "\nThe person looks like<image>"
    assert suffix_tokens[0] == "<|eot_id|>" and suffix_tokens[-1] == "<image>"
    long_prompt = " ".join(["A charming medieval village with cobblestone streets"] * 80)
    with caplog.at_level(logging.WARNING, logger="gamecraft.model.text"):
        fitted = encoders.fit_prompt(long_prompt)
        tokens = encoders.tokenize_llm([long_prompt])
    assert "too long" in caplog.text
    assert long_prompt.startswith(fitted) and 0 < len(fitted) < len(long_prompt)
    assert int(tokens["attention_mask"].sum()) == encoders.llm_max_length  # every slot used, nothing lost
    assert _valid_tail(encoders, long_prompt, 7) == suffix_tokens
    states, mask = encoders.encode_llm([long_prompt])
    assert states.shape[1] == encoders.config.text_len and int(mask.sum()) == encoders.config.text_len


def test_normal_prompts_are_not_changed(encoders, text_golden):
    manifest, _ = text_golden
    for prompt in manifest["prompts"].values():
        assert encoders.fit_prompt(prompt) == prompt


def test_long_prompt_can_be_refused(golden_dir):
    strict = _encoders(golden_dir, TextEncoderConfig(truncate_long_prompts=False))
    with pytest.raises(ValueError, match="too long"):
        strict.tokenize_llm(["village " * 400])


# -- checkpoint layouts ------------------------------------------------------------------------
def _llava_copy(golden_dir, tmp_path):
    folder = tmp_path / LLAVA
    shutil.copytree(golden_dir / "text_tiny" / LLAVA, folder)
    return folder, load_file(str(folder / "model.safetensors"))


def _hidden(model, golden) -> torch.Tensor:
    with torch.no_grad():
        return model(
            input_ids=golden["llm/cond/input_ids"],
            attention_mask=golden["llm/cond/attention_mask_full"],
            output_hidden_states=True,
        ).hidden_states[-3]


def test_llm_loads_without_vision_tower_and_from_shards(golden_dir, tmp_path, text_golden):
    _, golden = text_golden
    folder, tensors = _llava_copy(golden_dir, tmp_path)
    language = {k: v for k, v in tensors.items() if k.startswith("language_model.")}
    keys = sorted(language)
    (folder / "model.safetensors").unlink()
    shards = {
        "model-00001-of-00002.safetensors": keys[: len(keys) // 2],
        "model-00002-of-00002.safetensors": keys[len(keys) // 2 :],
    }
    for name, shard_keys in shards.items():
        save_file({k: language[k] for k in shard_keys}, str(folder / name))
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": {k: name for name, ks in shards.items() for k in ks}})
    )
    model = load_llm(folder, dtype=torch.float32)
    torch.testing.assert_close(_hidden(model, golden), golden["llm/cond/all_hidden_states/2"], rtol=1e-5, atol=1e-5)


def test_llm_loads_the_transformers_5_key_layout(golden_dir, tmp_path, text_golden):
    _, golden = text_golden
    folder, tensors = _llava_copy(golden_dir, tmp_path)
    renamed = {k.replace("language_model.model.", "model.language_model.", 1): v for k, v in tensors.items()}
    save_file(renamed, str(folder / "model.safetensors"))
    model = load_llm(folder, dtype=torch.float32)
    torch.testing.assert_close(_hidden(model, golden), golden["llm/cond/all_hidden_states/2"], rtol=1e-5, atol=1e-5)


def test_llm_missing_weight_is_named(golden_dir, tmp_path):
    folder, tensors = _llava_copy(golden_dir, tmp_path)
    missing = "language_model.model.layers.1.mlp.up_proj.weight"
    save_file({k: v for k, v in tensors.items() if k != missing}, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match=r"layers\.1\.mlp\.up_proj\.weight"):
        load_llm(folder, dtype=torch.float32)


def test_clip_missing_weight_is_named(golden_dir, tmp_path):
    folder = tmp_path / CLIP
    shutil.copytree(golden_dir / "text_tiny" / CLIP, folder)
    tensors = load_file(str(folder / "model.safetensors"))
    save_file({k: v for k, v in tensors.items() if "final_layer_norm" not in k}, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match="final_layer_norm"):
        load_clip(folder, dtype=torch.float32)


def test_float16_encoders_run_close_to_float32(golden_dir, encoders, text_golden):
    manifest, _ = text_golden
    tiny = golden_dir / "text_tiny"
    half = TextEncoders(
        load_llm(tiny / LLAVA, dtype=torch.float16),
        PreTrainedTokenizerFast.from_pretrained(str(tiny / LLAVA)),
        load_clip(tiny / CLIP, dtype=torch.float16),
        CLIPTokenizer.from_pretrained(str(tiny / CLIP)),
    )
    reference = encoders.encode_prompts(manifest["prompts"]["cond"])
    embeddings = half.encode_prompts(manifest["prompts"]["cond"])
    assert embeddings.text_states.dtype == embeddings.text_states_2.dtype == torch.float16
    assert torch.equal(embeddings.text_mask, reference.text_mask)
    valid = reference.text_mask.bool()
    torch.testing.assert_close(embeddings.text_states.float()[valid], reference.text_states[valid], rtol=0, atol=0.05)
    torch.testing.assert_close(embeddings.text_states_2.float(), reference.text_states_2, rtol=0, atol=0.05)


def test_long_prompt_with_multibyte_characters_under_a_byte_level_tokenizer():
    """Byte-level BPE splits one emoji into several tokens sharing its offsets; cutting must still end."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    from gamecraft.testing.tiny_weights import LLAMA3_PATTERN, LLM_SPECIAL_TOKENS, bytes_to_unicode

    vocab = {t: i for i, t in enumerate(LLM_SPECIAL_TOKENS)}
    vocab.update({c: len(LLM_SPECIAL_TOKENS) + i for i, c in enumerate(bytes_to_unicode().values())})
    backend = Tokenizer(models.BPE(vocab, [], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in LLM_SPECIAL_TOKENS])
    backend.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>")
    encoders = TextEncoders(None, tokenizer, None, None, TextEncoderConfig(text_len=64))
    prompt = "a 🎮 b " * 40
    fitted = encoders.fit_prompt(prompt)
    assert prompt.startswith(fitted) and fitted
    tokens = encoders.tokenize_llm([prompt])
    assert int(tokens["attention_mask"].sum()) <= encoders.llm_max_length
    text = tokenizer.decode(tokens["input_ids"][0][tokens["attention_mask"][0].bool()])
    assert text.endswith("<|eot_id|>" + PROMPT_SUFFIX)


def test_template_longer_than_the_window_is_an_error(encoders):
    tiny_window = TextEncoders(None, encoders.llm_tokenizer, None, None, TextEncoderConfig(text_len=3))
    with pytest.raises(ValueError, match="template alone"):
        tiny_window.fit_prompt("a castle")
