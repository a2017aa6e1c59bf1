"""The weights directory ``benchmarks/bench_cold_start.py`` measures: the official layout at full size with
random values (or tiny, on the CPU), and the conversion ``setup()`` makes on a new machine.

``generate`` writes configs, tokenizers, VAE and the distilled transformer's ``.pt``; ``convert`` times
``load_transformer`` from the ``.pt`` alone, then leaves a sparse stand-in and writes the text encoders
(the 64 GB disk cannot hold the ``.pt``, its safetensors copy and the text encoders at once).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

PARTIAL_MARKER = "bench_cold_partial.json"  # generate wrote part of the .pt: too little disk for all of it twice
GB = 1e9


def generate(weights_dir: Path, tiny: bool, free_gb: float | None = None) -> dict:
    """Configs, tokenizers, VAE and the distilled transformer's ``.pt`` (materialised: every tensor its
    own storage, so the file has its real size); no text encoders yet."""
    import torch

    from benchmarks.setup_weights import random_views, write_vae_pt
    from gamecraft.model import GameCraftTransformer, TransformerConfig
    from gamecraft.testing.random_weights import PRODUCTION_VAE
    from gamecraft.testing.tiny_weights import TINY_VAE, write_tiny_weights
    from gamecraft.weights import DEFAULT_LAYOUT, TRANSFORMER_CONFIG_FILE, save_official_checkpoint

    begin = time.perf_counter()
    write_tiny_weights(weights_dir)  # tokenizers and configs; the tensors below replace the tiny ones
    (weights_dir / DEFAULT_LAYOUT.transformer_full).unlink(missing_ok=True)  # only "distilled" is served here
    config = TransformerConfig.tiny() if tiny else TransformerConfig.production()
    (weights_dir / TRANSFORMER_CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2))
    vae = write_vae_pt(weights_dir, TINY_VAE if tiny else PRODUCTION_VAE)
    meta = GameCraftTransformer(config, dtype=torch.bfloat16, device="meta").state_dict()
    pt_bytes = sum(v.numel() * v.element_size() for v in meta.values())
    views = random_views({k: tuple(v.shape) for k, v in meta.items()}, {k: v.dtype for k, v in meta.items()}, 10)
    free = shutil.disk_usage(weights_dir).free if free_gb is None else free_gb * GB
    partial = None
    if free < 2 * pt_bytes + 2 * GB:  # the .pt and its safetensors copy do not fit at once (text encoders come later)
        budget, kept = (free - 2 * GB) / 2, {}
        for name, view in views.items():  # the first tensors, up to what fits twice
            if sum(v.numel() * v.element_size() for v in kept.values()) + view.numel() * view.element_size() > budget:
                break
            kept[name] = view
        partial = {"free_gb": round(free / GB, 1), "full_pt_bytes": pt_bytes}
        views = kept
        (weights_dir / PARTIAL_MARKER).write_text(json.dumps(partial))
    pt = weights_dir / DEFAULT_LAYOUT.transformer_distilled
    save_official_checkpoint({k: v.clone() for k, v in views.items()}, pt)
    os.sync()
    return {
        "vae_bytes": vae,
        "pt_bytes": pt.stat().st_size,
        "partial": partial,
        "seconds": round(time.perf_counter() - begin, 1),
    }


def convert(weights_dir: Path, tiny: bool) -> dict:
    """(a) the conversion, timed in this (fresh) process; then the stand-in ``.pt`` and the text encoders."""
    import torch

    from gamecraft.weights import DEFAULT_LAYOUT, load_transformer, transformer_config
    from gamecraft.weights.manifest import Manifest, write_stand_ins

    pt = weights_dir / DEFAULT_LAYOUT.transformer_distilled
    if (weights_dir / PARTIAL_MARKER).is_file():
        return {**convert_partial(weights_dir, pt), **write_text_encoders(weights_dir, tiny)}
    # where setup() looks: the GPU plan's cache directory; the CPU's (tiny) engine looks beside the .pt
    cache_dir, device = (None, "cpu") if tiny else (weights_dir / ".safetensors-cache", "cuda")
    begin = time.perf_counter()
    model = load_transformer(pt, transformer_config(weights_dir), device=device, cache_dir=cache_dir)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - begin
    del model
    size = pt.stat().st_size
    pt.unlink()  # the cache carries the weights; the stand-in keeps the name and size it was made from
    write_stand_ins(weights_dir, Manifest({}, stand_ins={DEFAULT_LAYOUT.transformer_distilled: size}))
    return {"convert_s": round(seconds, 1), "pt_bytes": size, **write_text_encoders(weights_dir, tiny)}


def convert_partial(weights_dir: Path, pt: Path) -> dict:
    """The conversion's reading and writing timed on the part of the ``.pt`` the disk holds twice, scaled to
    the whole ``.pt`` (an extrapolation: stated as such); then the whole cache beside a sparse ``.pt``."""
    from benchmarks.setup_weights import write_transformer_cache
    from gamecraft.weights import read_official_checkpoint, transformer_config
    from gamecraft.weights.transformer import write_safetensors

    partial = json.loads((weights_dir / PARTIAL_MARKER).read_text())
    copy = weights_dir / "partial-conversion.safetensors"
    begin = time.perf_counter()
    state_dict = read_official_checkpoint(pt)
    write_safetensors(copy, state_dict, {"format": "pt"})
    seconds = time.perf_counter() - begin
    size = pt.stat().st_size
    del state_dict
    copy.unlink()
    pt.unlink()
    write_transformer_cache(weights_dir, transformer_config(weights_dir))  # the full cache + a sparse .pt
    os.sync()
    (weights_dir / PARTIAL_MARKER).unlink()
    return {
        "convert_s": None,
        "partial_pt_bytes": size,
        "partial_convert_s": round(seconds, 1),
        "convert_s_extrapolated": round(seconds * partial["full_pt_bytes"] / size, 1),
        **partial,
    }


def write_text_encoders(weights_dir: Path, tiny: bool) -> dict:
    from benchmarks.setup_weights import write_clip_text, write_llm
    from gamecraft.testing.random_weights import CLIP_L_TEXT, LLAMA3_8B
    from gamecraft.weights import DEFAULT_LAYOUT as L
    from gamecraft.weights import check_layout

    begin = time.perf_counter()
    llm = write_llm(weights_dir / L.llava_dir, {} if tiny else {**LLAMA3_8B, "head_dim": 128}, 2 if tiny else 4)
    clip = write_clip_text(weights_dir / L.clip_dir, {} if tiny else CLIP_L_TEXT)
    os.sync()
    check_layout(weights_dir, "distilled")
    return {"text_bytes": llm + clip, "text_write_s": round(time.perf_counter() - begin, 1)}
