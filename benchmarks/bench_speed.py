"""Speed suite for one GPU (issue 7): per pass and per chunk, eager vs compiled vs fp8, in one run.

Full-size random weights (``gamecraft.random_weights``). Measured side by side on the same machine:

* one transformer pass at 10 and 18 latent frames, batch 1 (and 2 with ``--cfg``): eager, compiled
  blocks, fp8 twin (``go_fast``) compiled — plus the fp8 pass error vs the exact pass (relative L2,
  max abs) on the same inputs;
* whole chunks through ``WorldSession`` (camera, denoising, VAE decode): ``--chunks`` names which,
  e.g. ``distilled-first distilled-later full-first``; the fp8 chunk error is measured on the final
  latents with the same noise;
* VAE decode of one chunk and prompt encoding (pinned-memory text encoders).

    python benchmarks/bench_speed.py --out $OUT --chunks distilled-first distilled-later
    python benchmarks/bench_speed.py --tiny --out /tmp/speed      # CPU smoke test of the script
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gamecraft.actions import single  # noqa: E402
from gamecraft.camera import chunk_poses  # noqa: E402
from gamecraft.model import TransformerConfig  # noqa: E402
from gamecraft.model.compile import compile_blocks  # noqa: E402
from gamecraft.presets import resolve_preset  # noqa: E402
from gamecraft.random_weights import random_engine  # noqa: E402
from gamecraft.sampling import LATENT_CHANNELS  # noqa: E402
from gamecraft.session import WorldSession, chunk_noise  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> tuple[float, object]:
    sync(device)
    begin = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - begin, out


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def build(args):
    if not args.tiny:
        return random_engine(device="cuda"), (704, 1216)
    from gamecraft.tiny_weights import TINY_VAE

    engine = random_engine(device="cpu", dtype=torch.float32, vae_dtype=torch.float32, text_dtype=torch.float32,
                           text_offload=False, transformer_config=TransformerConfig.tiny(), vae_config=TINY_VAE,
                           llm_config=dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                           num_attention_heads=4, num_key_value_heads=2),
                           clip_config=dict(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=2, max_position_embeddings=77))
    return engine, (32, 48)


def pass_suite(engine, size, args) -> list[dict]:
    device = engine.device
    height, width = size
    h, w = height // 8, width // 8
    model = engine.transformer("distilled")
    rows = []
    cases = []
    for batch in (1, 2) if args.cfg else (1,):
        text = engine.encode_text("a village street", "", guidance=batch == 2)
        for frames in (10, 18):
            g = torch.Generator().manual_seed(frames)
            x = torch.randn(batch, 2 * LATENT_CHANNELS + 1, frames, h, w, generator=g).to(device, model.dtype)
            cam = torch.randn(batch, 33, 6, height, width, generator=g).to(device)
            t = torch.full((batch,), 900.0, device=device)
            cases.append(dict(frames=frames, batch=batch, text=text, x=x, t=t, tokens=model.camera_tokens(cam, frames),
                              outputs={}))
    # eager first for every shape, then compiled, then fp8 (compiling changes the model in place)
    for name in ("eager", "compiled", "fp8"):
        net = engine.transformer("distilled", fast=name == "fp8")
        if name != "eager":
            compile_blocks(net)
        for case in cases:
            def run(net=net, c=case):
                with torch.no_grad():
                    return net(c["x"], c["t"], c["text"].states, c["text"].mask, c["text"].pooled,
                               camera_tokens=c["tokens"], text_lengths=c["text"].lengths)

            first, _ = timed(run, device)
            times = [timed(run, device)[0] for _ in range(args.repeats)]
            case["outputs"][name] = run()
            rows.append(dict(kind="pass", frames=case["frames"], batch=case["batch"], variant=name,
                             first_call_s=round(first, 3), seconds=round(min(times), 3)))
            print(rows[-1], flush=True)
    for case in cases:
        out = case["outputs"]
        rows.append(dict(kind="pass_error", frames=case["frames"], batch=case["batch"],
                         fp8_rel_l2=round(rel_l2(out["fp8"], out["eager"]), 5),
                         fp8_max_abs=round(float((out["fp8"] - out["eager"]).abs().max()), 4),
                         compiled_max_abs=round(float((out["compiled"] - out["eager"]).abs().max()), 5)))
        print(rows[-1], flush=True)
    return rows


def chunk_suite(engine, size, args) -> list[dict]:
    device = engine.device
    height, width = size
    h, w = height // 8, width // 8
    rows = []
    for spec in args.chunks:
        preset_name, which = spec.split("-")
        history_frames = 1 if which == "first" else 9
        history = chunk_noise(99, 0, (1, LATENT_CHANNELS, history_frames, h, w))
        noise = chunk_noise(7, 1, (1, LATENT_CHANNELS, history_frames + 9, h, w))
        steps = args.steps or None
        latents = {}
        for fp8 in (False, True) if not args.no_fp8 else (False,):
            preset = resolve_preset(preset_name, steps, fp8=fp8)
            session = WorldSession.start(engine, preset, "a village street", 1, height, width, history=history,
                                         ref_latents=history[:, :, -1:])
            seconds, result = timed(lambda: session.generate_chunk(chunk_poses(single("w", 0.3)), "w", noise=noise),
                                    device)
            latents[fp8] = result.latents
            rows.append(dict(kind="chunk", chunk=spec, fp8=fp8, steps=preset.num_inference_steps,
                             seconds=round(seconds, 2), denoise_s=round(result.seconds_denoise, 2),
                             decode_s=round(result.seconds_decode, 2)))
            print(rows[-1], flush=True)
        if True in latents:
            rows.append(dict(kind="chunk_error", chunk=spec, fp8_rel_l2=round(rel_l2(latents[True], latents[False]), 5),
                             fp8_max_abs=round(float((latents[True] - latents[False]).abs().max()), 4)))
            print(rows[-1], flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--cfg", action="store_true", help="also batch-2 (guidance) passes")
    parser.add_argument("--chunks", nargs="*", default=["distilled-first", "distilled-later"])
    parser.add_argument("--steps", type=int, default=0, help="override the presets' steps (0: preset)")
    parser.add_argument("--no-fp8", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    engine, size = build(args)
    engine.config = dataclasses.replace(engine.config, compile=True)  # fp8 twins get compiled blocks too
    setup_s = time.perf_counter() - start
    text_s, _ = timed(lambda: engine.encode_text("a village street", "", guidance=True), engine.device)
    h, w = size[0] // 8, size[1] // 8
    decode_s, _ = timed(lambda: engine.vae.decode(torch.zeros(1, LATENT_CHANNELS, 9, h, w, device=engine.device)),
                        engine.device)
    rows = [dict(kind="setup", random_engine_s=round(setup_s, 1), text_encode_s=round(text_s, 2),
                 vae_decode_s=round(decode_s, 2))]
    rows += pass_suite(engine, size, args)
    rows += chunk_suite(engine, size, args)
    env = dict(date=datetime.date.today().isoformat(), torch=torch.__version__,
               card=torch.cuda.get_device_name() if engine.device.type == "cuda" else "cpu",
               peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 1) if engine.device.type == "cuda" else None,
               size=size, total_s=round(time.perf_counter() - start, 1))
    (args.out / "bench_speed.json").write_text(json.dumps(dict(environment=env, rows=rows), indent=2))
    print(json.dumps(env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
