"""A deployable weights directory: ``python -m gamecraft.weights prepare DIR`` (issue 27).

Run once, on a GPU of the kind that will serve, by whoever pushes the model. It

1. downloads what the served variants miss (the gated Hugging Face repository, as ``setup()`` would);
2. converts their transformers to the safetensors cache (``DIR/.safetensors-cache``);
3. builds the engine as ``setup()`` does and warms up **every** pass shape of every preset, exact and
   go_fast, so every graph a request can run is compiled, and stores the compile-cache artifacts
   (:mod:`gamecraft.serving.artifacts`);
4. writes ``DIR/gamecraft-manifest.json``: size and sha256 of every file ``setup()`` reads, the machine.

Then ``DIR`` is baked into the image (``cog build --separate-weights``) or uploaded to storage that
``GAMECRAFT_WEIGHTS_URL`` points at (README, "Deploying").
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from gamecraft.pipeline.presets import PRESETS
from gamecraft.weights import DEFAULT_LAYOUT, cache_path_for, check_layout, download_weights, load_checkpoint_state_dict
from gamecraft.weights import transformer_config as read_transformer_config
from gamecraft.weights.manifest import MANIFEST_NAME, Manifest, describe_files, read_manifest, write_manifest

from .artifacts import KERNELS_FILE, save_kernels, this_machine
from .build import build_service
from .config import ServingConfig
from .plan import PROBE, ServicePlan, plan_service

log = logging.getLogger(__name__)


def prepare_directory(
    config: ServingConfig,
    variants: Iterable[str] | None = None,
    plan: ServicePlan | None = None,
    device=PROBE,
    hash_threads: int = 8,
) -> Manifest:
    """Prepare ``config.weights`` (a directory) for serving ``variants`` (default: every preset's) and
    return the manifest written. ``plan``: an already made plan (tests: a compiled CPU engine)."""
    weights_dir = plan.weights_dir if plan is not None else config.weights_dir
    if weights_dir is None:
        raise ValueError("prepare needs a weights directory, not GAMECRAFT_WEIGHTS=tiny/random")
    variants = list(dict.fromkeys(variants or (PRESETS[name].variant for name in PRESETS)))
    # every preset warmed, exact and go_fast; the kernels already in this process's Inductor cache are
    # recorded as they are read, so nothing is loaded from a previous manifest
    config = replace(config, warm_presets=None, warm_go_fast=True, fallback_to_tiny=False)
    missing = [v for v in variants if not _complete(weights_dir, v)]
    if missing:
        if not config.download:
            raise RuntimeError(f"{weights_dir} lacks the {', '.join(missing)} weights; downloading is disabled")
        download_weights(weights_dir, variants, token=config.hf_token)
    plan = plan or plan_service(config, device)
    served = build_service(config, plan=plan, kernels=False)
    try:
        log.info("warm-up of %d pass shapes done in %.1fs", len(plan.warm_shapes), served.warm_up.seconds)
    finally:
        served.close()
    cache_dir = plan.engine_config.cache_dir
    for variant in variants:  # variants setup does not preload: converted here, loaded on first use
        if variant not in plan.engine_config.preload and cache_dir is not None:
            load_checkpoint_state_dict(
                weights_dir / DEFAULT_LAYOUT.transformer(variant),
                read_transformer_config(weights_dir),
                cache_dir=cache_dir,
            )
    return write_prepared_manifest(
        weights_dir, variants, cache_dir, this_machine(plan.engine_config.device), hash_threads
    )


def _complete(weights_dir: Path, variant: str) -> bool:
    try:
        check_layout(weights_dir, variant)
    except FileNotFoundError:
        return False
    return True


def write_prepared_manifest(
    weights_dir: Path, variants: Iterable[str], cache_dir: Path | None, machine: dict, hash_threads: int = 8
) -> Manifest:
    """Hash what ``setup()`` reads for ``variants`` (the transformers through their safetensors cache: their
    ``.pt`` becomes a stand-in) and store this process's compiled kernels beside it."""
    weights_dir = Path(weights_dir)
    files: set[str] = set()
    stand_ins: dict[str, int] = {}
    for variant in variants:
        for rel in DEFAULT_LAYOUT.required_files(variant, weights_dir).values():
            files.add(rel)
        pt = DEFAULT_LAYOUT.transformer(variant)
        cache = cache_path_for(weights_dir / pt, cache_dir)
        if cache.is_file():
            files.discard(pt)
            stand_ins[pt] = (weights_dir / pt).stat().st_size
            files.add(cache.resolve().relative_to(weights_dir.resolve()).as_posix())
    config_file = weights_dir / "gamecraft_models" / "transformer_config.json"
    if config_file.is_file():
        files.add(config_file.relative_to(weights_dir).as_posix())
    files.discard(KERNELS_FILE)
    log.info("hashing %d files", len(files))
    manifest = Manifest(describe_files(weights_dir, files, hash_threads), machine, None, stand_ins)
    write_manifest(weights_dir, manifest)
    if save_kernels(weights_dir, machine) is None:
        log.warning("nothing was compiled (compilation off?): the manifest records no kernels")
    log.info("prepared %s (%s)", weights_dir, MANIFEST_NAME)
    return read_manifest(weights_dir)
