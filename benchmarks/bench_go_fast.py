"""go_fast's attention on one GPU (issue 22): SageAttention2 against FA3 bf16 and FA3-FP8, side by side.

Full-size random weights, one process, the same inputs for every variant:

* per attention call (60,448 and 33,696 tokens × 24 heads × 128, bf16 q/k/v; keys random and with channel
  offsets + a few large channels, as real DiT keys): seconds and relative L2 against exact float32
  attention for FA3 bf16, the SageAttention sm90 kernel, the emulation of its scheme on the same GPU
  tensors (gamecraft.model.sage_reference) and FA3's FP8 mode. Errors are taken on 32 blocks of 64
  query rows spread over the sequence (every key is used; rows are independent), so the float32
  reference and the emulation stay cheap;
* per transformer pass at 10 and 18 latent frames (1 row) and 18 frames with 2 rows: exact (compiled
  blocks, FA3), fp8 linears alone, fp8 linears + sage, fp8 linears + FA3-FP8 — seconds and relative L2
  against the exact pass. Compiled blocks, as the real go_fast path runs (``--eager`` to skip compiling);
* a distilled chunk (8 steps, first chunk: 10 latent frames; ``--chunk later`` for 18) per variant from
  the same noise: seconds, relative L2 of the latents and PSNR of the decoded frames against the exact run.

    python benchmarks/bench_go_fast.py --out $OUT                  # one H200: ≈ 5–6 min with compile warm-ups
    python benchmarks/bench_go_fast.py --tiny --out /tmp/go-fast   # CPU smoke test (emulations instead of kernels)

Writes bench_go_fast.json (environment + rows) and bench_go_fast.md (tables) into --out, rows as they come.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_speed import pass_inputs  # noqa: E402
from benchmarks.go_fast_calls import call_suite, timed  # noqa: E402
from gamecraft.model.attention import fa3_available  # noqa: E402
from gamecraft.model.sage import sage_unavailable_reason  # noqa: E402
from gamecraft.model.sage_reference import (  # noqa: E402
    relative_l2,
)
from gamecraft.pipeline.actions import single  # noqa: E402
from gamecraft.pipeline.camera import chunk_poses  # noqa: E402
from gamecraft.pipeline.presets import resolve_preset  # noqa: E402
from gamecraft.pipeline.session import WorldSession, chunk_noise  # noqa: E402
from gamecraft.serving.build import build_service  # noqa: E402
from gamecraft.serving.config import ServingConfig  # noqa: E402
from gamecraft.specs.geometry import LATENT_CHANNELS  # noqa: E402


class Report:
    """Rows written to --out after every measurement (a run stopped at its limit keeps what it measured)."""

    def __init__(self, out: Path, env: dict, start: float):
        self.out, self.env, self.rows, self.start = out, env, [], start

    def add(self, **row) -> dict:
        self.rows.append(row)
        print(row, flush=True)
        self.env["elapsed_s"] = round(time.perf_counter() - self.start, 1)
        (self.out / "bench_go_fast.json").write_text(json.dumps(dict(environment=self.env, rows=self.rows), indent=1))
        (self.out / "bench_go_fast.md").write_text(markdown(self.env, self.rows))
        return row


# -- per transformer pass ----------------------------------------------------------------------------------
def pass_input(engine, size, frames: int, rows: int, model) -> dict:
    height, width = size
    g = torch.Generator().manual_seed(frames * 10 + rows)
    text = engine.encode_text("a village street", "", guidance=rows == 2)
    x = torch.randn(rows, 2 * LATENT_CHANNELS + 1, frames, height // 8, width // 8, generator=g)
    cam = torch.randn(rows, 33, 6, height, width, generator=g)
    return dict(
        x=x.to(engine.device, model.dtype),
        t=torch.full((rows,), 900.0, device=engine.device),
        text=text,
        tokens=model.camera_tokens(cam.to(engine.device), frames),
    )


def run_pass(net, case: dict, backend: str) -> torch.Tensor:
    with torch.no_grad():
        return net(pass_inputs(case, backend))


def pass_suite(report: Report, args, engine, size, variants: dict, shapes: list, warm: set) -> None:
    """``warm``: (model, frames, rows) already run — compiled for that shape, so no warm-up call is needed
    (switching the attention kernel does not recompile: it runs outside the compiled graphs)."""
    device = engine.device
    for frames, rows in shapes:
        case = pass_input(engine, size, frames, rows, engine.transformer("distilled"))
        reference = None
        for name, (go_fast, backend) in variants.items():
            net = engine.transformer("distilled", go_fast=go_fast)

            def one_pass(net=net, case=case, backend=backend):
                return run_pass(net, case, backend)

            try:
                first = None
                if (id(net), frames, rows) not in warm:
                    first, _ = timed(one_pass, device)  # compile / warm-up
                    warm.add((id(net), frames, rows))
                seconds, out = timed(one_pass, device, args.repeats)
                first = seconds if first is None else first
            except Exception as err:
                report.add(kind="pass", frames=frames, rows=rows, variant=name, error=f"{type(err).__name__}: {err}")
                continue
            reference = out if name == "exact" else reference
            row = dict(
                kind="pass",
                frames=frames,
                rows=rows,
                variant=name,
                attention=backend,
                fp8_linears=go_fast,
                first_call_s=round(first, 2),
                seconds=round(seconds, 3),
            )
            if reference is not None and name != "exact":
                row |= dict(
                    rel_l2=round(relative_l2(out, reference), 5),
                    max_abs=round(float((out.float() - reference.float()).abs().max()), 4),
                )
            report.add(**row)


# -- per chunk ---------------------------------------------------------------------------------------------
def psnr(frames: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR in dB of frames in [0, 1] against the reference frames."""
    mse = float(((frames.double() - reference.double()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def chunk_suite(report: Report, args, engine, size, variants: dict) -> None:
    height, width = size
    h, w = height // 8, width // 8
    history_frames = 1 if args.chunk == "first" else 9
    history = chunk_noise(99, 0, (1, LATENT_CHANNELS, history_frames, h, w))
    noise = chunk_noise(7, 1, (1, LATENT_CHANNELS, history_frames + 9, h, w))
    reference = None
    for name, (go_fast, backend) in variants.items():
        preset = resolve_preset("distilled", args.steps or None, go_fast=go_fast)
        engine.use_attention(variants["exact"][1], go_fast=backend)  # the session's kernel for go_fast presets
        session = WorldSession.start(engine, preset, "a village street", 1, height, width, history=history)
        session.frames_dtype = torch.float32
        try:
            seconds, result = timed(
                lambda session=session: session.generate_chunk(chunk_poses(single("w", 0.3)), "w", noise=noise),
                engine.device,
            )
        except Exception as err:
            report.add(kind="chunk", chunk=args.chunk, variant=name, error=f"{type(err).__name__}: {err}")
            continue
        reference = result if name == "exact" else reference
        row = dict(
            kind="chunk",
            chunk=args.chunk,
            variant=name,
            steps=preset.num_inference_steps,
            seconds=round(seconds, 2),
            denoise_s=round(result.seconds_denoise, 2),
            decode_s=round(result.seconds_decode, 2),
        )
        if reference is not None and name != "exact":
            row |= dict(
                latents_rel_l2=round(relative_l2(result.latents, reference.latents), 5),
                frames_psnr_db=round(psnr(result.frames, reference.frames), 2),
            )
        report.add(**row)


# -- output ------------------------------------------------------------------------------------------------
def markdown(env: dict, rows: list[dict]) -> str:
    lines = [f"# bench_go_fast — {env.get('card')}, {env.get('date')}", "", "```", json.dumps(env), "```", ""]
    tables = (
        (
            "call",
            "Per attention call (errors on 32 × 64 sampled query rows vs exact float32)",
            ["tokens", "keys", "method", "ms", "tflops", "rel_l2", "rel_l2_vs_kernel", "ms_sampled_rows", "error"],
        ),
        (
            "pass",
            "Per transformer pass (relative L2 vs the exact pass)",
            ["frames", "rows", "variant", "attention", "seconds", "first_call_s", "rel_l2", "max_abs", "error"],
        ),
        (
            "chunk",
            "Distilled chunk from the same noise (vs the exact run)",
            [
                "chunk",
                "variant",
                "steps",
                "seconds",
                "denoise_s",
                "decode_s",
                "latents_rel_l2",
                "frames_psnr_db",
                "error",
            ],
        ),
    )
    for kind, title, columns in tables:
        selected = [r for r in rows if r["kind"] == kind]
        if not selected:
            continue
        columns = [c for c in columns if any(c in r for r in selected)]
        lines += [f"## {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in selected]
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true", help="tiny CPU models (smoke test of the script)")
    parser.add_argument("--eager", action="store_true", help="do not compile the blocks")
    parser.add_argument("--tokens", type=int, nargs="+", help="per-call sequence lengths (default 60448 33696)")
    parser.add_argument("--logit-std", type=float, default=1.0, help="std of q·k/√D for the random per-call inputs")
    parser.add_argument("--call-repeats", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1, help="timed passes after the warm-up pass")
    parser.add_argument("--chunk", choices=("first", "later"), default="first")
    parser.add_argument("--steps", type=int, default=0, help="override the distilled preset's 8 steps (0: preset)")
    parser.add_argument("--skip", nargs="*", default=[], choices=("calls", "passes", "chunks", "two-rows"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.tokens = args.tokens or ([300, 170] if args.tiny else [60448, 33696])
    start = time.perf_counter()
    # the engine as setup() builds it (compiled blocks, and the fp8 twin compiled when the engine makes it),
    # not warmed up: the passes below compile their shapes on their first call, which is not timed
    config = ServingConfig.from_env(
        weights="tiny" if args.tiny else "random", compile=not args.eager, gpus=1, tiny_size=(32, 48)
    )
    served = build_service(config, warm=False)
    engine, size = served.engine, served.plan.size
    engine.vae.uncompile_decoder()  # the chunk rows time the decode too: no compilation inside them
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 references stay float32
    device = engine.device
    fa3 = device.type == "cuda" and fa3_available()
    sage_reason = sage_unavailable_reason(device)
    exact_backend = "fa3" if fa3 else "sdpa"
    env = dict(
        date=datetime.date.today().isoformat(),
        torch=torch.__version__,
        card=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        size=size,
        compiled=not args.eager,
        fa3_available=fa3,
        sage_unavailable_reason=sage_reason,
        exact_attention=exact_backend,
        setup_s=round(time.perf_counter() - start, 1),
    )
    try:
        import sageattention

        env["sageattention"] = getattr(sageattention, "__file__", None)
    except Exception:
        env["sageattention"] = None
    report = Report(args.out, env, start)
    # fa3-fp8 needs fa3-fwd on GPUs (its emulation on CPUs); sage needs its kernel on GPUs (emulation on CPUs)
    fp8_attention = "fa3-fp8" if fa3 or device.type == "cpu" else None
    kernels = {
        "fa3" if fa3 else "sdpa": exact_backend,
        "sage": "sage" if sage_reason is None else None,
        "fa3-fp8": fp8_attention,
    }
    variants = {"exact": (False, exact_backend), "fp8": (True, exact_backend)}
    if sage_reason is None:
        variants["fp8+sage"] = (True, "sage")
    if fp8_attention:
        variants["fp8+fa3-fp8"] = (True, fp8_attention)
    if sage_reason is not None:
        report.add(kind="note", text=f"sage skipped: {sage_reason}")
    warm: set = set()
    if "calls" not in args.skip:
        call_suite(report, args, device, kernels)
    if "passes" not in args.skip:
        pass_suite(report, args, engine, size, variants, [(18, 1), (10, 1)], warm)
    if "chunks" not in args.skip:
        chunk_suite(report, args, engine, size, variants)
    if "passes" not in args.skip and "two-rows" not in args.skip:
        pass_suite(report, args, engine, size, variants, [(18, 2)], warm)
    report.env["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1) if device.type == "cuda" else None
    report.add(kind="done", total_s=round(time.perf_counter() - start, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
