"""The weights directory ``bench_setup.py`` measures: the official layout with random weights at full size and
in the real containers (or tiny ones for its CPU smoke test); see ``bench_setup.py``'s docstring, step 1.

Tensors are views into one random pool per dtype, so RAM stays ~1 GB while tens of GB are written."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch

CACHE_SUBDIR = ".safetensors-cache"  # serving.plan.plan_service's EngineConfig.cache_dir
MARKER = "bench_setup_prepared.json"


def log(message: str) -> None:
    print(f"[bench_setup {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- prepare -----------------------------------------------------------------------------------
def random_views(shapes: dict[str, tuple[int, ...]], dtypes: dict[str, torch.dtype], seed: int):
    """``{name: tensor}`` whose tensors are views into one random pool per dtype (N(0, 0.02)), at
    different offsets: nothing is materialised per tensor, so writing 25 GB needs ~1 GB of RAM. (Bytes
    repeat only ~1 GB apart: no compressing filesystem or readahead gains from that.)"""
    pools: dict[torch.dtype, torch.Tensor] = {}
    generator = torch.Generator().manual_seed(seed)
    for dtype in set(dtypes.values()):
        largest = max(torch.Size(shapes[n]).numel() for n in shapes if dtypes[n] == dtype)
        pools[dtype] = (torch.randn(largest + 2**20, generator=generator) * 0.02).to(dtype)
    views = {}
    for i, name in enumerate(shapes):
        pool, numel = pools[dtypes[name]], torch.Size(shapes[name]).numel()
        offset = (i * 104_729) % (pool.numel() - numel + 1)
        views[name] = pool[offset : offset + numel].view(shapes[name])
    return views


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def resize_text_config(folder: Path, sizes: dict, **top) -> dict:
    """Update ``config.json``'s ``text_config`` with ``sizes`` (and top-level ``top``); returns it."""
    config = json.loads((folder / "config.json").read_text())
    config["text_config"].update(sizes)
    config.update(top)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return config["text_config"]


def write_llm(folder: Path, sizes: dict, shards: int) -> int:
    """LLaVA's language model as ``model-0000i-of-0000n.safetensors`` + ``model.safetensors.index.json``
    (the real download's container; fp16, ``language_model.model.*``) at ``sizes``."""
    from transformers import LlamaConfig, LlamaModel

    from gamecraft.testing.tiny_weights import meta_shapes
    from gamecraft.weights.transformer import write_safetensors

    text_config = resize_text_config(folder, sizes, torch_dtype="float16")
    shapes = {
        f"language_model.model.{k}": v for k, v in meta_shapes(lambda: LlamaModel(LlamaConfig(**text_config))).items()
    }
    tensors = random_views(shapes, dict.fromkeys(shapes, torch.float16), seed=20)
    total, done, weight_map = nbytes(tensors), 0, {}
    for name, tensor in tensors.items():  # contiguous groups of ~total / shards bytes
        weight_map[name] = f"model-{min(done * shards // total, shards - 1) + 1:05d}-of-{shards:05d}.safetensors"
        done += tensor.numel() * tensor.element_size()
    for shard in sorted(set(weight_map.values())):
        write_safetensors(
            folder / shard, {k: tensors[k] for k, v in weight_map.items() if v == shard}, {"format": "pt"}
        )
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
    )
    (folder / "model.safetensors").unlink(missing_ok=True)  # the index names the shards now
    return total


def write_clip_text(folder: Path, sizes: dict) -> int:
    """CLIP's ``model.safetensors`` (fp32 like the real one) holding the text model at ``sizes``."""
    from transformers import CLIPTextConfig, CLIPTextModel

    from gamecraft.testing.tiny_weights import meta_shapes, prefixed
    from gamecraft.weights.transformer import write_safetensors

    text_config = resize_text_config(folder, sizes, **({"projection_dim": sizes["projection_dim"]} if sizes else {}))
    text = meta_shapes(lambda: CLIPTextModel(CLIPTextConfig(**text_config)))
    hidden = text_config["hidden_size"]
    shapes = {**prefixed(text, "text_model.", "text_model."), "text_projection.weight": (hidden, hidden)}
    tensors = random_views(shapes, dict.fromkeys(shapes, torch.float32), seed=30)
    write_safetensors(folder / "model.safetensors", tensors, {"format": "pt"})
    return nbytes(tensors)


def write_vae_pt(weights_dir: Path, config) -> int:
    """The official VAE ``.pt`` (fp32, ``vae.*`` keys) + ``config.json``: tiny_weights.write_vae at ``config``."""
    from gamecraft.testing.tiny_weights import write_vae
    from gamecraft.weights import DEFAULT_LAYOUT

    path = weights_dir / DEFAULT_LAYOUT.vae_weights
    write_vae(path, weights_dir / DEFAULT_LAYOUT.vae_config, config, torch.Generator().manual_seed(1))
    return path.stat().st_size


def write_transformer_cache(weights_dir: Path, config) -> int:
    """The distilled transformer's safetensors cache (bf16, fp32 policy params) + its placeholder .pt.

    We measure the *cached* path (every setup() after the first): the 25 GB ``.pt`` is never read, so
    it is a sparse file (``os.truncate``: its size, no disk blocks). It is created BEFORE the cache:
    ``load_checkpoint_state_dict`` only trusts a cache that is not older than the ``.pt`` and was made
    from it (``gamecraft.weights.write_cache`` tags it with the ``.pt``'s name, size and key)."""
    from gamecraft.model import GameCraftTransformer
    from gamecraft.weights import DEFAULT_LAYOUT, TRANSFORMER_CONFIG_FILE, write_cache

    (weights_dir / TRANSFORMER_CONFIG_FILE).parent.mkdir(parents=True, exist_ok=True)
    (weights_dir / TRANSFORMER_CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2))
    (weights_dir / DEFAULT_LAYOUT.transformer_full).unlink(missing_ok=True)  # only "distilled" is preloaded
    meta = GameCraftTransformer(config, dtype=torch.bfloat16, device="meta").state_dict()
    tensors = random_views({k: tuple(v.shape) for k, v in meta.items()}, {k: v.dtype for k, v in meta.items()}, 10)
    pt = weights_dir / DEFAULT_LAYOUT.transformer_distilled
    pt.unlink(missing_ok=True)
    pt.touch()
    os.truncate(pt, nbytes(tensors) + 2**20)  # ~ torch.save's size; sparse: no blocks on disk
    write_cache(pt, tensors, cache_dir=weights_dir / CACHE_SUBDIR)
    return nbytes(tensors)


def assert_cache_valid(weights_dir: Path, config) -> Path:
    """Fail loudly unless ``load_checkpoint_state_dict`` will take the cache (``gamecraft.weights.cache_is_current``,
    the check it makes): else setup() would read the sparse placeholder."""
    from gamecraft.weights import DEFAULT_LAYOUT, cache_is_current, cache_path_for

    pt = weights_dir / DEFAULT_LAYOUT.transformer_distilled
    cache = cache_path_for(pt, weights_dir / CACHE_SUBDIR)
    if not cache_is_current(pt, config, cache_dir=weights_dir / CACHE_SUBDIR):
        raise SystemExit(
            f"cache {cache} is missing, older than {pt}, not made from it or not of this transformer config: "
            "setup() would read the placeholder .pt"
        )
    return cache


def prepare(weights_dir: Path, tiny: bool) -> dict:
    """Write (or reuse, when the marker says the same sizes) the benchmark's weights directory."""
    from gamecraft.model import TransformerConfig
    from gamecraft.testing.random_weights import CLIP_L_TEXT, LLAMA3_8B, PRODUCTION_VAE
    from gamecraft.testing.tiny_weights import TINY_VAE, write_tiny_weights
    from gamecraft.weights import DEFAULT_LAYOUT as L
    from gamecraft.weights import check_layout

    config = TransformerConfig.tiny() if tiny else TransformerConfig.production()
    marker = weights_dir / MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("tiny") == tiny:
        log(f"reusing the prepared weights in {weights_dir}")
        info = json.loads(marker.read_text())
    else:
        need = 8 * 2**20 if tiny else 44 * 10**9  # 42.1 GB written + the inductor cache
        if shutil.disk_usage(weights_dir).free < need:
            raise SystemExit(
                f"{weights_dir}: need {need / 1e9:.0f} GB free, have "
                f"{shutil.disk_usage(weights_dir).free / 1e9:.0f} GB (pass --dir elsewhere)"
            )
        info = {"tiny": tiny, "components": {}}
        start = time.perf_counter()
        write_tiny_weights(weights_dir)  # tokenizers and configs (also used at tiny size)
        steps = (
            (
                "LLaVA language model",
                lambda: write_llm(
                    weights_dir / L.llava_dir, {} if tiny else {**LLAMA3_8B, "head_dim": 128}, 2 if tiny else 4
                ),
            ),
            ("CLIP text model", lambda: write_clip_text(weights_dir / L.clip_dir, {} if tiny else CLIP_L_TEXT)),
            ("VAE", lambda: write_vae_pt(weights_dir, TINY_VAE if tiny else PRODUCTION_VAE)),
            ("transformer cache", lambda: write_transformer_cache(weights_dir, config)),
        )
        for what, step in steps:
            begin = time.perf_counter()
            size = step()
            seconds = time.perf_counter() - begin
            info["components"][what] = {"bytes": size, "seconds": round(seconds, 2)}
            log(f"prepare: {what} {size / 1e9:.2f} GB in {seconds:.1f} s ({size / 1e9 / seconds:.2f} GB/s)")
        os.sync()  # the data is on the disk, not only in dirty pages
        info["prepare_s"] = round(time.perf_counter() - start, 1)
        marker.write_text(json.dumps(info, indent=2))
    check_layout(weights_dir, "distilled")
    info["cache"] = str(assert_cache_valid(weights_dir, config))
    return info
