"""The inputs of one transformer pass, as one value: :class:`PassInputs`.

Every caller of a transformer — the sampler, the warm-up, the multi-GPU workers, the parity checks, the
benchmarks — builds one and calls ``transformer(inputs)``; :class:`gamecraft.model.GameCraftTransformer`
and the multi-GPU stand-in (``gamecraft.parallel.engine.DistributedTransformer``) take the same value.
It lives beside the model (the lowest layer that reads it) and is exported by :mod:`gamecraft.engine`
with the :class:`~gamecraft.engine.Transformer` interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch


@dataclass
class StepCache:
    """Features for the reference's step cache ("deepcache").

    A full pass given a ``StepCache`` stores the input of the last single-stream block in
    ``features`` ([B, img_tokens + text_len, hidden], float32). A pass with ``use_cache=True`` runs
    only the embeddings, that last block on ``features`` with the new timestep, and the final layer.
    """

    features: torch.Tensor | None = None

    def clear(self) -> None:
        self.features = None


@dataclass(frozen=True)
class PassInputs:
    """One pass over ``B`` rows (1, or 2 with guidance: ``[uncond, cond]``) of ``T`` latent frames.

    Sizes: ``h, w`` latent height and width (the video's ÷ 8); ``L`` text tokens (256 in production);
    ``n = T·(h/2)·(w/2)`` image tokens (patch 1×2×2).

    * ``x``: [B, 33, T, h, w] latents in the transformer's dtype — 16 noisy + 16 condition channels + 1
      mask; T = 10 (a first chunk) or 18 (a later one).
    * ``t``: [B] timesteps in [0, 1000] (not divided by 1000).
    * ``text_states``: [B, L, text_states_dim] the LLM's hidden states (4096 wide in production);
      ``text_mask``: [B, L] right-padded 0/1.
    * ``text_states_2``: [B, text_states_dim_2] CLIP's pooled vector (768 wide; the reference's name).
    * ``cam_latents``: [B, 33, 6, 8h, 8w] the Plücker embedding of the chunk's camera; or
      ``camera_tokens``: [B or 1, n, hidden] float32 from ``transformer.camera_tokens`` (computed once per
      chunk, so CameraNet does not run every step). One of the two is required.
    * ``rope``: (cos, sin) [n, head_dim] float32 tables (``gamecraft.model.rope_tables``); computed per call
      when None.
    * ``text_lengths``: valid text tokens per row as Python ints (``text_lengths_from_mask``, once per
      prediction); derived from ``text_mask`` (one host sync) when None.
    * ``cache``: a :class:`~gamecraft.model.StepCache` a full pass fills; ``use_cache``: reuse its features
      instead of running the blocks (the step cache of the ``full`` preset; the new ``t`` still applies).
    * ``attention_backend``: the attention kernel (:data:`gamecraft.model.attention.AttentionBackend`).
    """

    x: torch.Tensor
    t: torch.Tensor
    text_states: torch.Tensor
    text_mask: torch.Tensor
    text_states_2: torch.Tensor
    cam_latents: torch.Tensor | None = None
    camera_tokens: torch.Tensor | None = None
    rope: tuple[torch.Tensor, torch.Tensor] | None = None
    text_lengths: Sequence[int] | None = None
    cache: StepCache | None = None
    use_cache: bool = False
    attention_backend: str = "sdpa"

    @property
    def batch(self) -> int:
        """``B``, the rows of this pass."""
        return self.x.shape[0]

    def rows(self, part: slice) -> PassInputs:
        """The same pass on the rows ``part`` only (a guidance row alone). Camera tokens shared by every
        row (batch 1) stay shared; the step cache is kept, so give each row its own with :func:`replace`."""
        batch = self.batch

        def cut(value):
            return value[part] if value is not None and value.shape[0] == batch else value

        return replace(
            self,
            x=self.x[part],
            t=self.t[part],
            text_states=self.text_states[part],
            text_mask=self.text_mask[part],
            text_states_2=self.text_states_2[part],
            cam_latents=cut(self.cam_latents),
            camera_tokens=cut(self.camera_tokens),
            # a slice of the same sequence type: compiled blocks guard on it (a list would recompile them)
            text_lengths=None if self.text_lengths is None else self.text_lengths[part],
        )
