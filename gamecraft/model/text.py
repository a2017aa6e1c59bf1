"""Text conditioning: LLaVA-Llama-3-8B states (→ ``text_states``) and CLIP-L pooled (→ ``text_states_2``).

As the reference (``hymm_sp/text_encoder``, ``constants.py`` template ``li-dit-encode-video``):

* **LLM**: ``template.format(prompt) + "\\nThe person looks like<image>"``, tokenized with BOS, right
  padding and truncation to ``text_len + crop_start`` tokens (256 + 95); forward with the attention
  mask; take ``hidden_states[-(skip + 1)]`` (skip = 2, no final norm); drop the first ``crop_start``
  positions of states and mask → ``[B, 256, 4096]`` and ``[B, 256]``. ``crop_start`` is the token count
  of the template prefix (BOS … ``user<|end_header_id|>\\n\\n``), computed from the tokenizer: 95 for the
  Llama-3 vocabulary, as the reference hard-codes.
* **CLIP**: the raw prompt, 77 tokens padded, mask passed, ``pooler_output`` → ``[B, 768]``.

Only the LLaVA *language model* is built and loaded (a transformers ``LlamaModel`` from the LLaVA
config's ``text_config``); the vision tower and projector are never used, so they are never read.
The LLaVA tokenizer is loaded with ``PreTrainedTokenizerFast`` (``tokenizer.json`` as is), which under
transformers 5 is what the reference's ``LlamaTokenizerFast`` gave under 4.x.

Deviations (docs/components.md): a real negative prompt is available as an option (the reference
always uses ``""``, quirk Q1); an over-long prompt loses its *end*, not the suffix (quirk Q14).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from transformers import CLIPTextModel, LlamaModel

logger = logging.getLogger(__name__)

PROMPT_TEMPLATE = (
    "<|start_header_id|>system<|end_header_id|>\n\nDescribe the video by detailing the following aspects: "
    "1. The main content and theme of the video."
    "2. The color, shape, size, texture, quantity, text, and spatial relationships of the objects."
    "3. Actions, events, behaviors temporal relationships, physical movement changes of the objects."
    "4. background environment, light, style and atmosphere."
    "5. camera angles, movements, and transitions used in the video:<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
)
PROMPT_SUFFIX = "\nThe person looks like<image>"


@dataclass(frozen=True)
class TextEncoderConfig:
    """How prompts are encoded (defaults = reference arguments).

    ``text_len``: LLM tokens kept after the crop. ``hidden_state_skip_layer``: 2 → ``hidden_states[-3]``.
    ``crop_start``: ``None`` counts the template prefix with the tokenizer. ``truncate_long_prompts``:
    shorten an over-long prompt so the suffix survives (``True``) or raise ``ValueError`` (``False``).
    """

    text_len: int = 256
    hidden_state_skip_layer: int = 2
    clip_max_length: int = 77
    crop_start: int | None = None
    truncate_long_prompts: bool = True


@dataclass
class PromptEmbeddings:
    """Transformer text inputs for a batch of prompts (rows in the order given).

    ``text_states`` [B, text_len, D_llm] (model dtype), ``text_mask`` [B, text_len] int64 (1 = token),
    ``text_states_2`` [B, D_clip] (model dtype).
    """

    text_states: torch.Tensor
    text_mask: torch.Tensor
    text_states_2: torch.Tensor


class TextEncoders:
    """The LLM and CLIP encoders with their tokenizers; see the module docstring for the recipe."""

    def __init__(
        self,
        llm: LlamaModel,
        llm_tokenizer,
        clip: CLIPTextModel,
        clip_tokenizer,
        config: TextEncoderConfig = TextEncoderConfig(),
    ):
        self.llm, self.llm_tokenizer = llm, llm_tokenizer
        self.clip, self.clip_tokenizer = clip, clip_tokenizer
        self.config = config
        self.llm_tokenizer.padding_side = "right"
        prefix = PROMPT_TEMPLATE[: PROMPT_TEMPLATE.index("{}")]
        counted = len(self.llm_tokenizer(prefix)["input_ids"])
        self.crop_start = counted if config.crop_start is None else config.crop_start
        if self.crop_start != counted:
            logger.warning("crop_start %d differs from the template prefix's %d tokens", self.crop_start, counted)

    @property
    def llm_max_length(self) -> int:
        return self.config.text_len + self.crop_start

    def llm_text(self, prompt: str) -> str:
        """The exact string the LLM tokenizer sees for ``prompt``."""
        return PROMPT_TEMPLATE.format(prompt) + PROMPT_SUFFIX

    def fit_prompt(self, prompt: str) -> str:
        """``prompt`` unchanged if its templated text fits ``llm_max_length`` tokens, else its longest
        prefix (cut at a token boundary) that does, so the suffix is kept (the reference cut the suffix)."""
        count = len(self.llm_tokenizer(self.llm_text(prompt))["input_ids"])
        if count <= self.llm_max_length:
            return prompt
        if not self.config.truncate_long_prompts:
            raise ValueError(
                f"prompt is too long: {count} LLM tokens with the template, at most "
                f"{self.llm_max_length} ({self.config.text_len} after the template)"
            )
        start = len(PROMPT_TEMPLATE[: PROMPT_TEMPLATE.index("{}")])
        fitted = prompt
        while count > self.llm_max_length and fitted:
            encoding = self.llm_tokenizer(self.llm_text(fitted), return_offsets_mapping=True)
            ends = [
                end - start
                for begin, end in encoding["offset_mapping"]
                if begin >= start and start < end <= start + len(fitted)
            ]
            keep = len(ends) - (count - self.llm_max_length)
            cut = ends[keep - 1] if keep > 0 else 0
            if cut >= len(fitted):  # byte pieces of one character share its end offset: cut before it
                cut = max((end for end in ends if end < len(fitted)), default=0)
            fitted = fitted[:cut]
            count = len(self.llm_tokenizer(self.llm_text(fitted))["input_ids"])
        if count > self.llm_max_length:
            raise ValueError(f"the prompt template alone is {count} LLM tokens, more than {self.llm_max_length}")
        logger.warning(
            "prompt too long for the %d-token text window: kept its first %d of %d characters",
            self.config.text_len,
            len(fitted),
            len(prompt),
        )
        return fitted

    def tokenize_llm(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """``input_ids`` / ``attention_mask`` [B, text_len + crop_start] int64 of the templated prompts."""
        texts = [self.llm_text(self.fit_prompt(p)) for p in prompts]
        return dict(
            self.llm_tokenizer(
                texts, max_length=self.llm_max_length, truncation=True, padding="max_length", return_tensors="pt"
            )
        )

    def tokenize_clip(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """``input_ids`` / ``attention_mask`` [B, 77] int64 of the raw prompts (CLIP truncates the end)."""
        return dict(
            self.clip_tokenizer(
                list(prompts),
                max_length=self.config.clip_max_length,
                truncation=True,
                padding="max_length",
                return_tensors="pt",
            )
        )

    @torch.no_grad()
    def encode_llm(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(text_states [B, text_len, D], text_mask [B, text_len])`` — cropped hidden states and mask."""
        tokens = self.tokenize_llm(prompts)
        device = next(self.llm.parameters()).device
        mask = tokens["attention_mask"].to(device)
        out = self.llm(input_ids=tokens["input_ids"].to(device), attention_mask=mask, output_hidden_states=True)
        states = out.hidden_states[-(self.config.hidden_state_skip_layer + 1)]
        return states[:, self.crop_start :], mask[:, self.crop_start :]

    @torch.no_grad()
    def encode_clip(self, prompts: list[str]) -> torch.Tensor:
        """CLIP-L ``pooler_output`` [B, D_clip] of the raw prompts."""
        tokens = self.tokenize_clip(prompts)
        device = next(self.clip.parameters()).device
        return self.clip(
            input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device)
        ).pooler_output

    def encode(self, prompts: list[str]) -> PromptEmbeddings:
        """Embeddings of ``prompts`` (one row each, same order)."""
        text_states, text_mask = self.encode_llm(prompts)
        return PromptEmbeddings(text_states, text_mask, self.encode_clip(prompts))

    def encode_prompts(self, cond_prompt: str, negative_prompt: str = "") -> PromptEmbeddings:
        """The CFG batch ``[uncond, cond]``. The reference's uncond prompt is always ``""`` (its negative
        prompt is silently dropped, quirk Q1): keep the default for parity, pass text to use a real one."""
        return self.encode([negative_prompt, cond_prompt])
