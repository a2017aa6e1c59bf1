"""Parity section ``text``: LLM template/tokens/hidden states and CLIP pooled output.

The tiny LLaVA and CLIP folders in ``<golden>/text_tiny/`` (named as in the official layout) are loaded
through the production loaders in float32. Prompts come from ``text.json["prompts"]``; for each
prompt key every tensor ``llm/<key>/...`` and ``clip/<key>/...`` listed in the manifest is compared:
``input_ids``, ``attention_mask_full`` (tokenizer output), ``prompt_embeds`` / ``attention_mask``
(after the crop), ``all_hidden_states/<i>`` and ``pooled``. ``crop_start`` is compared with
``info.crop_start``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from transformers import CLIPTokenizer, PreTrainedTokenizerFast

from gamecraft.model.text import TextEncoderConfig, TextEncoders
from gamecraft.parity import Comparison, compare, load_manifest, load_tensors
from gamecraft.weights import DEFAULT_LAYOUT
from gamecraft.weights.text import load_clip, load_llm

SECTION = "text"


def check(golden_dir: Path) -> Iterator[Comparison]:
    golden_dir = Path(golden_dir)
    manifest = load_manifest(golden_dir, "text")
    tensors = load_tensors(golden_dir, "text")
    info = manifest["info"]
    llava_dir = golden_dir / "text_tiny" / Path(DEFAULT_LAYOUT.llava_dir).name
    clip_dir = golden_dir / "text_tiny" / Path(DEFAULT_LAYOUT.clip_dir).name
    config = TextEncoderConfig(
        text_len=int(info["llm_max_length"]) - int(info["crop_start"]), clip_max_length=int(info["clip_max_length"])
    )
    encoders = TextEncoders(
        load_llm(llava_dir, dtype=torch.float32),
        PreTrainedTokenizerFast.from_pretrained(str(llava_dir)),
        load_clip(clip_dir, dtype=torch.float32),
        CLIPTokenizer.from_pretrained(str(clip_dir)),
        config,
    )
    yield compare(SECTION, "crop_start", torch.tensor(encoders.crop_start), torch.tensor(int(info["crop_start"])))

    names = set(manifest["tensors"])
    for key, prompt in manifest["prompts"].items():
        llm_tokens = encoders.tokenize_llm([prompt])
        clip_tokens = encoders.tokenize_clip([prompt])
        states, mask = encoders.encode_llm([prompt])
        actual = {
            f"llm/{key}/input_ids": llm_tokens["input_ids"],
            f"llm/{key}/attention_mask_full": llm_tokens["attention_mask"],
            f"llm/{key}/prompt_embeds": states,
            f"llm/{key}/attention_mask": mask,
            f"clip/{key}/input_ids": clip_tokens["input_ids"],
            f"clip/{key}/attention_mask": clip_tokens["attention_mask"],
            f"clip/{key}/pooled": encoders.encode_clip([prompt]),
        }
        hidden_prefix = f"llm/{key}/all_hidden_states/"
        if any(name.startswith(hidden_prefix) for name in names):
            with torch.no_grad():
                hidden = encoders.llm(
                    input_ids=llm_tokens["input_ids"],
                    attention_mask=llm_tokens["attention_mask"],
                    output_hidden_states=True,
                ).hidden_states
            actual.update({f"{hidden_prefix}{i}": h for i, h in enumerate(hidden)})
        for name in sorted(n for n in names if n.startswith((f"llm/{key}/", f"clip/{key}/"))):
            if name not in actual:
                yield Comparison(SECTION, name, float("inf"), 0, 0, False, "unknown golden tensor name")
                continue
            yield compare(SECTION, name, actual[name], tensors[name])
