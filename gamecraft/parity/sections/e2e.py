"""Parity section ``e2e``: the whole chunk loop against the reference's recorded 2-chunk run.

Runs the production :class:`gamecraft.pipeline.session.WorldSession` on the golden tiny models (transformer
§3, VAE §6, text states §7) with the reference's recorded noise injected, and compares every
recorded transformer input/output, the returned latents and the decoded frames; then the 50-step
runs with and without the step cache and the 8-step guidance-1 run (chunk 0 only). Chunk 1 starts
from *our* chunk-0 latents, so errors would accumulate exactly as in a real session.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from gamecraft.model import TransformerConfig
from gamecraft.model.vae import GameCraftVae
from gamecraft.model.vae_config import VaeConfig, build_model, load_state_dict_strict
from gamecraft.parity import Comparison, compare, load_manifest, load_tensors
from gamecraft.pipeline.actions import single
from gamecraft.pipeline.camera import chunk_poses
from gamecraft.pipeline.presets import Preset, step_cache_flags
from gamecraft.pipeline.sampling import StepInfo, TextConditioning
from gamecraft.pipeline.scheduler import get_schedule
from gamecraft.pipeline.session import WorldSession
from gamecraft.pipeline.state import WorldState
from gamecraft.weights import load_transformer

SECTION = "e2e"


@dataclass
class _GoldenEngine:
    """A :class:`gamecraft.pipeline.session.SessionEngine` on the golden tiny models, with the recorded text states."""

    transformer_model: torch.nn.Module
    vae: GameCraftVae
    text: TextConditioning
    device: torch.device = torch.device("cpu")
    attention_backend: str = "sdpa-math"
    go_fast_attention_backend: str = "sdpa-math"
    rows_at_once: int = 2

    def transformer(self, variant: str, go_fast: bool = False):
        return self.transformer_model

    def encode_text(self, prompt: str, negative_prompt: str, guidance: bool) -> TextConditioning:
        return self.text if guidance else self.text.cond_only()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents)


def _engine(golden_dir: Path, manifest: dict, golden: dict) -> _GoldenEngine:
    config = TransformerConfig.from_reference(load_manifest(golden_dir, "transformer")["config"])
    for key, value in manifest["tiny_dit"].items():  # the e2e run must have used the §3 transformer
        if key in ("depth_double_blocks", "depth_single_blocks", "hidden_size", "num_heads"):
            assert getattr(config, key) == value, f"e2e tiny_dit {key}={value} differs from transformer.json"
    transformer = load_transformer(
        golden_dir / "transformer_tiny_mp_rank_00_model_states.pt", config, dtype=torch.float32, use_cache=False
    )
    vae_config = VaeConfig.from_official(manifest["tiny_vae"])
    vae_model = build_model(vae_config)
    from safetensors.torch import load_file

    load_state_dict_strict(vae_model, load_file(str(golden_dir / "vae_tiny_weights.safetensors")), "vae_tiny_weights")
    mask = golden["text_mask"]
    text = TextConditioning(
        golden["text_states"], mask, golden["text_states_2"], tuple(int(n) for n in mask.sum(dim=1))
    )
    return _GoldenEngine(transformer, GameCraftVae(vae_model.float().eval(), vae_config, tiling=True), text)


def _recorder(records: dict[int, StepInfo]):
    def on_step(info: StepInfo) -> None:
        records[info.index] = StepInfo(
            info.index,
            info.total,
            info.timestep.clone(),
            info.cached,
            info.model_input.clone(),
            info.prediction.clone(),
            info.latents.clone(),
            info.seconds,
        )

    return on_step


def check(golden_dir: Path) -> Iterator[Comparison]:
    manifest = load_manifest(golden_dir, "e2e")
    golden = load_tensors(golden_dir, "e2e")
    info = manifest["info"]
    engine = _engine(golden_dir, manifest, golden)
    height, width = info["size_HxW"]

    # Start image: posterior of the tiled encode, the recorded noise, fp16 rounding and scaling.
    mean, std = engine.vae.posterior(golden["image_pixels"])
    yield compare(SECTION, "image_posterior_mean", mean, golden["image_posterior_mean"])
    yield compare(SECTION, "image_posterior_std", std, golden["image_posterior_std"])
    sample = (mean + std * golden["image_sample_noise"]).to(torch.float16) * engine.vae.config.scaling_factor
    yield compare(SECTION, "image_latents_fp16_scaled", sample, golden["image_latents_fp16_scaled"])

    def run(preset: Preset, segments, prefix: str, chunks: int) -> Iterator[Comparison]:
        state = WorldState(last_latents=sample.float(), height=height, width=width, seed=info["seed"], chunks_done=0)
        session = WorldSession(engine, preset, state, engine.encode_text("", "", preset.uses_cfg))
        session.frames_dtype = torch.float32  # the golden video is the decoder's float output
        flags = step_cache_flags(preset.num_inference_steps, preset.step_cache)
        recorded_flags = manifest["info"].get(f"{prefix}_is_cache_per_step")
        if recorded_flags is not None:
            yield compare(SECTION, f"{prefix}/is_cache_per_step", torch.tensor(flags), torch.tensor(recorded_flags))
        for c in range(chunks):
            name = f"{prefix}/" if chunks == 1 else f"chunk{c}/"
            records: dict[int, StepInfo] = {}
            history = session.state.last_latents.clone()
            result = session.generate_chunk(
                chunk_poses(segments[c]),
                segments[c].label,
                noise=golden[f"{name}initial_noise_randn_like"],
                on_step=_recorder(records),
            )
            if chunks > 1:
                timesteps, _ = get_schedule(preset.num_inference_steps, preset.flow_shift)
                yield compare(SECTION, f"{name}timesteps", timesteps, golden[f"{name}timesteps"])
                for step, rec in sorted(records.items()):
                    yield compare(SECTION, f"{name}step{step}/t", rec.timestep.expand(2), golden[f"{name}step{step}/t"])
                    yield compare(
                        SECTION,
                        f"{name}step{step}/latent_model_input",
                        rec.model_input,
                        golden[f"{name}step{step}/latent_model_input"],
                    )
                    yield compare(
                        SECTION,
                        f"{name}step{step}/noise_pred_cfg_batch",
                        rec.prediction,
                        golden[f"{name}step{step}/noise_pred_cfg_batch"],
                    )
                # The reference carries ref_latents = last_latents[:, :, -1:] between chunks; we keep no copy of it.
                yield compare(
                    SECTION, f"{name}ref_latents", session.state.last_latents[:, :, -1:], golden[f"{name}ref_latents"]
                )
                returned = result.latents if history.shape[2] == 1 else torch.cat([history, result.latents], dim=2)
                yield compare(
                    SECTION, f"{name}denoised_latents_returned", returned, golden[f"{name}denoised_latents_returned"]
                )
                video = result.frames.permute(3, 0, 1, 2)[None]
                yield compare(SECTION, f"{name}video_0_1", video, golden[f"{name}video_0_1"])
            yield compare(SECTION, f"{name}last_latents", result.latents, golden[f"{name}last_latents"])

    segments = [single(action, speed) for action, speed in info["actions"]]
    cfg, shift = info["cfg_scale"], info["flow_shift"]
    yield from run(Preset("golden", "full", info["infer_steps"], cfg, shift, True), segments, "chunk", len(segments))
    for prefix, steps, guidance, cache in (
        ("deepcache50", 50, cfg, True),
        ("nodeepcache50", 50, cfg, False),
        ("distill8_cfg1", 8, 1.0, False),
    ):
        if f"{prefix}/last_latents" in golden:
            yield from run(Preset(prefix, "full", steps, guidance, shift, cache), segments, prefix, 1)
