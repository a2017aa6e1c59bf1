"""Transformer parity: RoPE tables, checkpoint loading, both chunk layouts, the step cache, hooks.

Weights come from the golden official container through the real loader (and once more through
a checkpoint freshly written by ``save_official_checkpoint``). Everything runs in float32 on CPU.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import torch

from gamecraft.model import (
    GameCraftTransformer,
    PassInputs,
    StepCache,
    TransformerConfig,
    rope_tables,
    text_lengths_from_mask,
)
from gamecraft.parity import Comparison, compare, load_manifest, load_tensors
from gamecraft.weights import cache_path_for, load_transformer, save_official_checkpoint

SECTION = "transformer"
CHECKPOINT = "transformer_tiny_mp_rank_00_model_states.pt"
WEIGHTS = "transformer_tiny_weights"
ROPE_ATOL = 1e-5  # tighter than the section default: the tables are pure float32 math
VAE_SPATIAL_FACTOR = 8  # pixels per latent (the VAE's compression, not a transformer parameter)
_INTER = re.compile(r"^(?P<group>inter\d+)/(?P<module>.+)\.call(?P<call>\d+)(?:\.out(?P<out>\d+))?$")
# Which model call produced each intermediates group: inter<T> = the call on in/x<T>.
_OUTPUT_OF_LAYOUT = {10: "out/first_chunk_10", 18: "out/continuation_18"}


def _inputs(g: dict[str, torch.Tensor], latent_frames: int, x_name: str | None = None, **options) -> PassInputs:
    return PassInputs(
        x=g[x_name or f"in/x{latent_frames}"],
        t=g["in/t"],
        text_states=g["in/text_states"],
        text_mask=g["in/text_mask"],
        text_states_2=g["in/text_states_2"],
        cam_latents=g["in/cam"],
        **options,
    )


def _rope_checks(golden_dir: Path, g: dict[str, torch.Tensor], config: TransformerConfig) -> Iterable[Comparison]:
    for name in sorted(k for k in g if re.fullmatch(r"in/freqs_(cos|sin)_\d+", k)):
        kind, frames = name.split("_")[1], int(name.rsplit("_", 1)[1])
        latent_h, latent_w = g[f"in/x{frames}"].shape[-2:]
        table = rope_tables(frames, latent_h, latent_w, config)[0 if kind == "cos" else 1]
        yield compare(SECTION, name, table, g[name], atol=ROPE_ATOL, rtol=ROPE_ATOL)
    production = TransformerConfig.from_golden(load_manifest(golden_dir, "full_model_keys")["transformer"]["config"])
    for name in sorted(k for k in g if re.fullmatch(r"rope_production_\d+x\d+/T\d+_(cos|sin)_rows", k)):
        group, leaf = name.split("/")
        height, width = (int(v) for v in group.rsplit("_", 1)[1].split("x"))
        frames, kind = int(leaf.split("_")[0][1:]), leaf.split("_")[1]
        rows = g[f"{group}/T{frames}_row_index"]
        table = rope_tables(frames, height // VAE_SPATIAL_FACTOR, width // VAE_SPATIAL_FACTOR, production)
        yield compare(SECTION, name, table[0 if kind == "cos" else 1][rows], g[name], atol=ROPE_ATOL, rtol=ROPE_ATOL)


def _weight_check(name: str, model: GameCraftTransformer, weights: dict[str, torch.Tensor]) -> Comparison:
    state = model.state_dict()
    if set(state) != set(weights):
        return Comparison(SECTION, name, float("inf"), 0.0, 0.0, False, "key sets differ")
    worst = max(float((state[k].double() - weights[k].double()).abs().max()) for k in weights)
    return Comparison(SECTION, name, worst, 0.0, 0.0, worst == 0.0, f"{len(weights)} tensors, exact")


def _intermediates(model: GameCraftTransformer, golden_keys: list[str], inputs: PassInputs) -> dict[str, torch.Tensor]:
    """Run ``model(inputs)`` with forward hooks on the modules the golden names record."""
    modules = sorted({_INTER.match(k)["module"] for k in golden_keys})
    calls: dict[str, list] = {m: [] for m in modules}
    handles = [
        model.get_submodule(m).register_forward_hook(lambda _mod, _args, output, m=m: calls[m].append(output))
        for m in modules
    ]
    try:
        model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    found = {}
    for key in golden_keys:
        match = _INTER.match(key)
        recorded = calls[match["module"]]
        call = int(match["call"])
        if call < len(recorded):
            output = recorded[call]
            found[key] = output[int(match["out"])] if match["out"] is not None else output
    return found


@torch.no_grad()
def check(golden_dir: Path) -> Iterable[Comparison]:
    golden_dir = Path(golden_dir)
    manifest = load_manifest(golden_dir, SECTION)
    config = TransformerConfig.from_golden(manifest["config"])
    g = load_tensors(golden_dir, SECTION)
    weights = load_tensors(golden_dir, WEIGHTS)

    yield from _rope_checks(golden_dir, g, config)

    model = load_transformer(golden_dir / CHECKPOINT, config, dtype=torch.float32, use_cache=False)
    yield _weight_check(f"weights via loader ({CHECKPOINT})", model, weights)

    text_lengths = text_lengths_from_mask(g["in/text_mask"])
    yield compare(
        SECTION,
        "text_lengths_from_mask(in/text_mask)",
        torch.tensor(text_lengths),
        torch.tensor(manifest["text_mask_valid_tokens"]),
    )

    for frames, out_name in _OUTPUT_OF_LAYOUT.items():
        if out_name not in g:
            continue
        rope = (g[f"in/freqs_cos_{frames}"], g[f"in/freqs_sin_{frames}"])
        inputs = _inputs(g, frames, rope=rope)
        cache = StepCache()
        yield compare(SECTION, out_name, model(replace(inputs, text_lengths=text_lengths, cache=cache)), g[out_name])
        # Each CFG row alone (its own text mask) must give that row of the batched output.
        for row in range(inputs.batch):
            alone = inputs.rows(slice(row, row + 1))
            yield compare(SECTION, f"{out_name}[row {row} alone]", model(alone)[0], g[out_name][row])
        if frames == 18 and "out/cache_out_after_continuation_18" in g:
            yield compare(
                SECTION, "out/cache_out_after_continuation_18", cache.features, g["out/cache_out_after_continuation_18"]
            )
            following = _inputs(g, 18, "in/x18_next", rope=rope, text_lengths=text_lengths, cache=cache, use_cache=True)
            cached = model(replace(following, t=g["in/t2"]))
            yield compare(SECTION, "out/continuation_18_is_cache_t2", cached, g["out/continuation_18_is_cache_t2"])

    inter_keys = sorted(k for k in g if _INTER.match(k))
    for group in sorted({_INTER.match(k)["group"] for k in inter_keys}):
        frames = int(group[len("inter") :])
        keys = [k for k in inter_keys if k.startswith(group + "/")]
        found = _intermediates(model, keys, _inputs(g, frames))
        for key in keys:
            if key not in found:
                yield Comparison(SECTION, key, float("inf"), 0.0, 0.0, False, "module not called that often")
                continue
            actual, expected = found[key], g[key]
            note = ""
            if actual.shape != expected.shape and actual.shape[0] == 1:
                actual, note = actual.expand_as(expected), "row-independent pass run once, broadcast"
            yield compare(SECTION, key, actual, expected, note=note)

    # A checkpoint written by save_official_checkpoint goes through the loader, then its cache.
    with tempfile.TemporaryDirectory(prefix="gamecraft_parity_") as tmp:
        path = save_official_checkpoint(weights, Path(tmp) / "mp_rank_00_model_states.pt")
        rewritten = load_transformer(path, config, dtype=torch.float32)
        yield _weight_check("weights via save_official_checkpoint + loader", rewritten, weights)
        cached = load_transformer(path, config, dtype=torch.float32)
        yield _weight_check("weights via the safetensors cache", cached, weights)
        yield Comparison(
            SECTION,
            "safetensors cache written",
            0.0,
            0.0,
            0.0,
            cache_path_for(path).is_file(),
            str(cache_path_for(path).name),
        )
        out_name = _OUTPUT_OF_LAYOUT[10]
        if out_name in g:
            rope = (g["in/freqs_cos_10"], g["in/freqs_sin_10"])
            yield compare(
                SECTION,
                f"{out_name} (re-written checkpoint, cached load)",
                cached(_inputs(g, 10, rope=rope)),
                g[out_name],
            )
