"""Speed suite for one GPU (issue 7): per pass and per chunk, eager vs compiled vs fp8, in one run.

Full-size random weights (``gamecraft.testing.random_weights``). Measured side by side on the same machine:

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
import datetime
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gamecraft.model import PassInputs, StepCache  # noqa: E402
from gamecraft.model.attention import fa3_available  # noqa: E402
from gamecraft.model.compile import compile_blocks  # noqa: E402
from gamecraft.pipeline.actions import single  # noqa: E402
from gamecraft.pipeline.camera import chunk_poses  # noqa: E402
from gamecraft.pipeline.presets import resolve_preset  # noqa: E402
from gamecraft.pipeline.session import WorldSession, chunk_noise  # noqa: E402
from gamecraft.specs.geometry import LATENT_CHANNELS  # noqa: E402


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
    """The engine as setup() builds it (``build_service``), eager and not warmed up: the variants below
    compile what they measure."""
    from gamecraft.serving.build import build_service
    from gamecraft.serving.config import ServingConfig

    config = ServingConfig.from_env(
        weights="tiny" if args.tiny else "random", compile=False, gpus=1, tiny_size=(32, 48)
    )
    served = build_service(config, warm=False)
    if args.compile_vae and not args.tiny:
        served.engine.vae.compile_decoder()
    return served.engine, served.plan.size


VARIANTS = (  # name, fp8 twin, attention kernel, compiled blocks
    ("eager", False, "sdpa", False),
    ("compiled", False, "sdpa", True),
    ("compiled-fa3", False, "fa3", True),
    ("fp8", True, "sdpa", True),
    ("fp8-fa3", True, "fa3", True),
)


def pass_cases(engine, size, args, model) -> list[dict]:
    device = engine.device
    height, width = size
    h, w = height // 8, width // 8
    cases = []
    shapes = [(1, 10), (1, 18)] + ([(2, 18)] if args.cfg else [])
    for batch, frames in shapes:
        text = engine.encode_text("a village street", "", guidance=batch == 2)
        g = torch.Generator().manual_seed(frames)
        x = torch.randn(batch, 2 * LATENT_CHANNELS + 1, frames, h, w, generator=g).to(device, model.dtype)
        cam = torch.randn(batch, 33, 6, height, width, generator=g).to(device)
        t = torch.full((batch,), 900.0, device=device)
        cases.append(
            dict(frames=frames, batch=batch, text=text, x=x, t=t, outputs={}, tokens=model.camera_tokens(cam, frames))
        )
    return cases


def pass_inputs(case: dict, backend: str, **options) -> PassInputs:
    """The pass of a :func:`pass_cases` case with the attention kernel ``backend``."""
    return case["text"].pass_inputs(case["x"], case["t"], case["tokens"], attention_backend=backend, **options)


def pass_suite(engine, size, args) -> list[dict]:
    """Every variant on every case (batch 2 only for the exact compiled variants), then the errors."""
    device = engine.device
    cases = pass_cases(engine, size, args, engine.transformer("distilled"))
    rows: list[dict] = []
    variants = [v for v in VARIANTS if "fa3" not in v[2] or args.fa3]
    for name, go_fast, backend, compiled in variants:
        net = engine.transformer("distilled", go_fast=go_fast)
        if compiled:
            compile_blocks(net)
        for case in cases:
            if case["batch"] == 2 and (go_fast or not compiled):
                continue

            def run(net=net, c=case, backend=backend, cache=None, use_cache=False):
                with torch.no_grad():
                    return net(pass_inputs(c, backend, cache=cache, use_cache=use_cache))

            try:
                first, _ = timed(run, device)
                times = [timed(run, device)[0] for _ in range(args.repeats)]
            except Exception as err:  # an unusable kernel: record it and go on
                rows.append(
                    dict(
                        kind="pass",
                        frames=case["frames"],
                        batch=case["batch"],
                        variant=name,
                        error=f"{type(err).__name__}: {str(err)[:300]}",
                    )
                )
                print(rows[-1], flush=True)
                continue
            case["outputs"][name] = run()
            rows.append(
                dict(
                    kind="pass",
                    frames=case["frames"],
                    batch=case["batch"],
                    variant=name,
                    first_call_s=round(first, 3),
                    seconds=round(min(times), 3),
                )
            )
            print(rows[-1], flush=True)
            if case["batch"] == 2 and name == "compiled":  # the full preset's cached steps
                cache = StepCache()
                run(cache=cache)
                cached = min(timed(lambda: run(cache=cache, use_cache=True), device)[0] for _ in range(3))
                rows.append(
                    dict(kind="cached_pass", frames=case["frames"], batch=2, variant=name, seconds=round(cached, 3))
                )
                print(rows[-1], flush=True)
            save(args, rows)
    for case in cases:
        out = case["outputs"]
        for name in out:
            if name != "eager" and "eager" in out:
                rows.append(
                    dict(
                        kind="pass_error",
                        frames=case["frames"],
                        batch=case["batch"],
                        variant=name,
                        rel_l2=round(rel_l2(out[name], out["eager"]), 6),
                        max_abs=round(float((out[name] - out["eager"]).abs().max()), 5),
                    )
                )
                print(rows[-1], flush=True)
    if args.profile:
        rows.append(profile_pass(engine, cases, variants))
        print(rows[-1], flush=True)
    save(args, rows)
    return rows


ATTENTION_KERNELS = ("flash", "fmha", "attn", "sdpa", "cudnn")
GEMM_KERNELS = ("gemm", "nvjet", "cutlass", "xmma", "matmul", "scaled_mm", "sm90")


def profile_pass(engine, cases, variants) -> dict:
    """GPU kernel time of one 18-frame batch-1 pass by category, for the best exact variant."""
    case = next(c for c in cases if c["frames"] == 18 and c["batch"] == 1)
    exact = [n for n, go_fast, _, _ in variants if not go_fast and n in case["outputs"]]
    name = "compiled-fa3" if "compiled-fa3" in exact else "compiled"
    _, go_fast, backend, _ = next(v for v in variants if v[0] == name)
    net = engine.transformer("distilled", go_fast=go_fast)
    cuda = engine.device.type == "cuda"
    activities = [torch.profiler.ProfilerActivity.CUDA if cuda else torch.profiler.ProfilerActivity.CPU]
    with torch.no_grad(), torch.profiler.profile(activities=activities) as prof:
        net(pass_inputs(case, backend))
        sync(engine.device)
    totals = {"attention": 0.0, "gemm": 0.0, "other": 0.0}
    top = []
    for event in prof.key_averages():
        if cuda and event.device_type != torch.autograd.DeviceType.CUDA:
            continue  # kernels only: CPU-side ops would count their kernels twice
        us = event.self_device_time_total if cuda else event.self_cpu_time_total
        if not us:
            continue
        key = event.key.lower()
        kind = (
            "attention"
            if any(k in key for k in ATTENTION_KERNELS)
            else "gemm"
            if any(k in key for k in GEMM_KERNELS)
            else "other"
        )
        totals[kind] += us / 1e6
        top.append((us / 1e6, event.key[:90], kind))
    top.sort(reverse=True)
    return dict(
        kind="profile",
        variant=name,
        frames=18,
        batch=1,
        seconds={k: round(v, 3) for k, v in totals.items()},
        top_kernels=[dict(seconds=round(s, 3), kernel=k, kind=c) for s, k, c in top[:12]],
    )


def save(args, rows) -> None:
    """Rows so far (a run stopped at its time limit still leaves its measurements)."""
    (args.out / "bench_speed_rows.json").write_text(json.dumps(rows, indent=1))


def choose_backends(engine, rows, args) -> dict:
    """Use the fastest measured exact / go_fast attention kernels (18 frames, batch 1) for the chunks."""
    seconds = {
        r["variant"]: r["seconds"]
        for r in rows
        if r["kind"] == "pass" and r["frames"] == 18 and r["batch"] == 1 and "seconds" in r
    }
    kernel = {name: backend for name, _, backend, _ in VARIANTS}
    exact = min((n for n in ("compiled", "compiled-fa3") if n in seconds), key=seconds.get, default="compiled")
    go_fast = min((n for n in ("fp8", "fp8-fa3") if n in seconds), key=seconds.get, default="fp8")
    engine.use_attention(kernel[exact], go_fast=kernel[go_fast])
    return dict(kind="chosen_kernels", exact=engine.attention_backend, go_fast=engine.go_fast_attention_backend)


def chunk_suite(engine, size, args, pass_rows) -> list[dict]:
    """Whole chunks through WorldSession; the 50-step full preset is estimated from a shorter run."""
    device = engine.device
    height, width = size
    h, w = height // 8, width // 8
    rows = []
    cached = [r["seconds"] for r in pass_rows if r["kind"] == "cached_pass"]
    for spec in args.chunks:
        preset_name, which = spec.split("-")
        history_frames = 1 if which == "first" else 9
        history = chunk_noise(99, 0, (1, LATENT_CHANNELS, history_frames, h, w))
        noise = chunk_noise(7, 1, (1, LATENT_CHANNELS, history_frames + 9, h, w))
        steps = args.full_steps if preset_name == "full" else (args.steps or None)
        latents = {}
        for fp8 in (False, True) if not args.no_fp8 and preset_name == "distilled" else (False,):
            preset = resolve_preset(preset_name, steps, go_fast=fp8)
            session = WorldSession.start(engine, preset, "a village street", 1, height, width, history=history)
            seconds, result = timed(
                lambda: session.generate_chunk(chunk_poses(single("w", 0.3)), "w", noise=noise), device
            )
            latents[fp8] = result.latents
            row = dict(
                kind="chunk",
                chunk=spec,
                fp8=fp8,
                steps=preset.num_inference_steps,
                seconds=round(seconds, 2),
                denoise_s=round(result.seconds_denoise, 2),
                decode_s=round(result.seconds_decode, 2),
                attention=engine.go_fast_attention_backend if fp8 else engine.attention_backend,
            )
            if preset_name == "full" and cached:
                # 50 steps with the step cache = 35 full steps + 15 cached ones (presets.step_cache_flags)
                per_step = result.seconds_denoise / preset.num_inference_steps
                row["estimate_50_steps_s"] = round(
                    35 * per_step
                    + 15 * cached[0]
                    + result.seconds_decode
                    + (seconds - result.seconds_denoise - result.seconds_decode),
                    1,
                )
            rows.append(row)
            print(rows[-1], flush=True)
            save(args, pass_rows + rows)
        if True in latents:
            rows.append(
                dict(
                    kind="chunk_error",
                    chunk=spec,
                    fp8_rel_l2=round(rel_l2(latents[True], latents[False]), 5),
                    fp8_max_abs=round(float((latents[True] - latents[False]).abs().max()), 4),
                )
            )
            print(rows[-1], flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--cfg", action="store_true", help="also batch-2 (guidance) passes")
    parser.add_argument("--chunks", nargs="*", default=["distilled-first", "distilled-later"])
    parser.add_argument("--steps", type=int, default=0, help="override the distilled preset's steps (0: preset)")
    parser.add_argument(
        "--full-steps",
        type=int,
        default=4,
        help="steps of the full-preset chunk; its 50-step time is estimated from them",
    )
    parser.add_argument("--fa3", action="store_true", help="also the FlashAttention-3 variants (fa3-fwd)")
    parser.add_argument("--profile", action="store_true", help="kernel-time breakdown of one pass")
    parser.add_argument("--no-fp8", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--eager-vae",
        dest="compile_vae",
        action="store_false",
        help="decode with the eager VAE decoder (default: compiled for full tiles, as predict())",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    engine, size = build(args)
    setup_s = time.perf_counter() - start
    fa3 = fa3_available()
    args.fa3 = args.fa3 and fa3
    h, w = size[0] // 8, size[1] // 8
    row = dict(kind="setup", random_engine_s=round(setup_s, 1), fa3_available=fa3)
    for attempt in ("first", "warm"):
        text_s, _ = timed(lambda: engine.encode_text("a village street", "", guidance=True), engine.device)
        decode_s, _ = timed(
            lambda: engine.vae.decode(torch.zeros(1, LATENT_CHANNELS, 9, h, w, device=engine.device)), engine.device
        )
        row |= {f"text_encode_{attempt}_s": round(text_s, 2), f"vae_decode_{attempt}_s": round(decode_s, 2)}
    rows = [row]
    print(row, flush=True)
    rows += pass_suite(engine, size, args)
    rows.append(choose_backends(engine, rows, args))
    rows += chunk_suite(engine, size, args, rows)
    env = dict(
        date=datetime.date.today().isoformat(),
        torch=torch.__version__,
        card=torch.cuda.get_device_name() if engine.device.type == "cuda" else "cpu",
        peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 1) if engine.device.type == "cuda" else None,
        size=size,
        total_s=round(time.perf_counter() - start, 1),
    )
    (args.out / "bench_speed.json").write_text(json.dumps(dict(environment=env, rows=rows), indent=2))
    print(json.dumps(env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
