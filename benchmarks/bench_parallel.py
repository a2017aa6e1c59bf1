"""Multi-GPU suite (issue 8): per-pass and per-chunk latency on 1..N GPUs, and agreement with one GPU.

Full-size random weights on every rank (``gamecraft.testing.random_weights``, same seed ⇒ same weights). Rank
0's engine is built once; for each world size a ``ParallelRuntime`` is started, measured and closed:

* the Ulysses overlap (``head_chunks``: 1 = none, 2, 3 head groups) on the 18-frame pass, side by side;
  the fastest is used for the rest; with ``--pack-placement``, the exchange buffers packed inside the
  compiled blocks against packed eagerly; with ``--profile``, rank 0's kernel time by kind;
* passes (batch 1 at 10 and 18 latent frames, batch 2 at 18, the fp8 twin at 18) — and, for the
  18-frame passes, relative L2 / max abs against the same pass on GPU 0 alone;
* one chunk's VAE decode over the GPUs (after an untimed warm-up decode);
* chunks through ``WorldSession`` (distilled later/first, exact and go_fast; the full preset from a
  short run plus one cached step, extrapolated to its 50 steps: 35 full + 15 cached).

    python benchmarks/bench_parallel.py --out $OUT --gpus 4 2 1    # 1: chunks on GPU 0 alone
    python benchmarks/bench_parallel.py --tiny --gpus 2 --out /tmp/par     # CPU (gloo) smoke test
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

from benchmarks.parallel_timing import kernel_seconds, rel_l2, sync, timed  # noqa: E402
from gamecraft.model import PassInputs, StepCache  # noqa: E402
from gamecraft.parallel import ParallelEngine, ParallelRuntime  # noqa: E402
from gamecraft.pipeline.actions import single  # noqa: E402
from gamecraft.pipeline.camera import chunk_poses  # noqa: E402
from gamecraft.pipeline.presets import resolve_preset  # noqa: E402
from gamecraft.pipeline.session import WorldSession, chunk_noise  # noqa: E402
from gamecraft.specs.geometry import LATENT_CHANNELS  # noqa: E402
from gamecraft.testing.random_weights import random_worker_spec  # noqa: E402


class Suite:
    def __init__(self, args):
        self.args = args
        self.rows: list[dict] = []
        self.start = time.perf_counter()
        if args.tiny:
            from gamecraft.testing.random_weights import TINY_24_HEADS, tiny_random_engine

            # 24 heads so that every GPU count splits them (the tiny weights directory has 2)
            self.local = tiny_random_engine(transformer_config=TINY_24_HEADS)
            self.spec = random_worker_spec(tiny=True, transformer_config=TINY_24_HEADS)
            self.size, self.devices = (160, 224), ["cpu"] * 8
        else:
            from gamecraft.serving.build import build_service, random_engine_kwargs
            from gamecraft.serving.config import ServingConfig

            # rank 0 as setup() builds it for random weights (on one GPU, not warmed up: the suite compiles
            # what it times); workers are added per GPU count
            service = build_service(ServingConfig.from_env(weights="random", gpus=1, compile=args.compile), warm=False)
            self.local = service.engine
            if args.compile and not args.compile_vae:
                self.local.vae.uncompile_decoder()
            self.spec = random_worker_spec(**random_engine_kwargs(service.plan))
            self.size, self.devices = (704, 1216), [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        self.record(
            dict(
                kind="setup",
                rank0_engine_s=round(time.perf_counter() - self.start, 1),
                attention=self.local.attention_backend,
                compile=args.compile,
                compile_vae=self.local.vae.decoder_compiled,
            )
        )
        self.reference: dict[tuple, torch.Tensor] = {}

    def record(self, row: dict) -> None:
        row["elapsed_s"] = round(time.perf_counter() - self.start, 1)
        self.rows.append(row)
        print(row, flush=True)
        (self.args.out / "bench_parallel_rows.json").write_text(json.dumps(self.rows, indent=1))

    def over_budget(self) -> bool:
        return time.perf_counter() - self.start > self.args.budget_s

    # -- passes ----------------------------------------------------------------------------------
    def inputs(self, rows: int, frames: int):
        height, width = self.size
        g = torch.Generator().manual_seed(frames * 10 + rows)
        device = self.local.device
        model = self.local.transformer("distilled")
        text = self.local.encode_text("a village street", "blurry", guidance=rows == 2)
        x = torch.randn(rows, 2 * LATENT_CHANNELS + 1, frames, height // 8, width // 8, generator=g)
        cam = torch.randn(rows, 33, 6, height, width, generator=g).to(device)
        with torch.no_grad():
            tokens = model.camera_tokens(cam, frames)
        return dict(
            x=x.to(device, model.dtype),
            t=torch.full((rows,), 900.0, device=device),
            text_states=text.states,
            text_mask=text.mask,
            text_states_2=text.pooled,
            camera_tokens=tokens,
            text_lengths=text.lengths,
        )

    def single_gpu_reference(self) -> None:
        for rows, frames in ((1, 18), (2, 18)):
            inp = self.inputs(rows, frames)
            model = self.local.transformer("distilled")
            with torch.no_grad():
                model(PassInputs(**inp, attention_backend=self.local.attention_backend))  # compile warm-up
                seconds, out = timed(lambda: model(PassInputs(**inp, attention_backend=self.local.attention_backend)))
            self.reference[(rows, frames)] = out.float().cpu()
            self.record(dict(kind="pass", gpus=1, rows=rows, frames=frames, variant="exact", seconds=round(seconds, 3)))

    def head_chunks(self, engine, world: int) -> None:
        """The 18-frame 1-row pass with the Ulysses exchanges in 1 (no overlap), 2, 3… head groups, side
        by side; the fastest setting is kept for the rest of this world size's measurements."""
        inp = self.inputs(1, 18)
        model = engine.transformer("distilled")
        backend = self.local.attention_backend
        ref = self.reference.get((1, 18))
        best = None
        with torch.no_grad():
            model(PassInputs(**inp, attention_backend=backend))  # compile warm-up for this shard size
            for chunks in self.args.head_chunks:
                engine.head_chunks = chunks
                model(PassInputs(**inp, attention_backend=backend))
                times = [timed(lambda: model(PassInputs(**inp, attention_backend=backend))) for _ in range(2)]
                seconds, out = min(times, key=lambda item: item[0])
                row = dict(kind="head_chunks", gpus=world, head_chunks=chunks, seconds=round(seconds, 3))
                if ref is not None:
                    row["rel_l2_vs_1gpu"] = round(rel_l2(out.cpu(), ref), 6)
                self.record(row)
                best = (seconds, chunks) if best is None or seconds < best[0] else best
        engine.head_chunks = best[1]
        self.record(dict(kind="head_chunks_chosen", gpus=world, head_chunks=best[1]))

    def pack_placement(self, engine, world: int) -> None:
        """The 18-frame 1-row pass with the exchange buffers packed inside the compiled blocks (the
        default) and in the eager exchange (as before session 6), alternating, side by side."""
        inp = self.inputs(1, 18)
        model = engine.transformer("distilled")
        backend = self.local.attention_backend
        times: dict[bool, list[float]] = {True: [], False: []}
        outputs = {}
        with torch.no_grad():
            for in_graph in (True, False):  # compile each variant's graphs first, untimed
                engine.pack_in_graph = in_graph
                model(PassInputs(**inp, attention_backend=backend))
            for _ in range(3):
                for in_graph in (True, False):
                    engine.pack_in_graph = in_graph
                    seconds, outputs[in_graph] = timed(lambda: model(PassInputs(**inp, attention_backend=backend)))
                    times[in_graph].append(seconds)
        engine.pack_in_graph = True
        for in_graph in (True, False):
            self.record(
                dict(
                    kind="pack_placement",
                    gpus=world,
                    in_graph=in_graph,
                    seconds=round(min(times[in_graph]), 3),
                    all_s=[round(t, 3) for t in times[in_graph]],
                )
            )
        # not bit-equal on GPUs: Inductor fuses the RMSNorm/RoPE kernels differently with the packing inside
        self.record(
            dict(
                kind="pack_placement_same_output",
                gpus=world,
                value=bool(torch.equal(outputs[True], outputs[False])),
                rel_l2=round(rel_l2(outputs[True].cpu(), outputs[False].cpu()), 6),
            )
        )

    def profile(self, engine, world: int) -> None:
        """Rank 0's kernel time in one 18-frame 1-row pass, by kind, against the pass's wall time: what
        the pass spends beyond 1/world of the one-GPU pass (exchange kernels, copies, idle)."""
        inp = self.inputs(1, 18)
        model = engine.transformer("distilled")
        backend = self.local.attention_backend
        with torch.no_grad():
            model(PassInputs(**inp, attention_backend=backend))
            sync()
            activities = [
                torch.profiler.ProfilerActivity.CUDA
                if torch.cuda.is_available()
                else torch.profiler.ProfilerActivity.CPU
            ]
            with torch.profiler.profile(activities=activities) as prof:
                seconds, _ = timed(lambda: model(PassInputs(**inp, attention_backend=backend)))
        totals, top = kernel_seconds(prof)
        self.record(
            dict(
                kind="profile",
                gpus=world,
                head_chunks=engine.head_chunks,
                wall_s=round(seconds, 3),
                kernel_s={k: round(v, 3) for k, v in sorted(totals.items())},
                kernel_sum_s=round(sum(totals.values()), 3),
                top=[dict(s=round(t, 3), kernel=k, kind=c) for t, k, c in top[:15]],
            )
        )

    def warm_decode(self, engine, world: int) -> None:
        """One untimed chunk decode, so that the first chunk's decode does not include every rank's
        first-use cuDNN setup for the four tile shapes."""
        height, width = self.size
        z = torch.randn(1, LATENT_CHANNELS, 9, height // 8, width // 8, generator=torch.Generator().manual_seed(3))
        seconds, _ = timed(lambda: engine.vae.decode(z.to(self.local.device)))
        self.record(dict(kind="decode_warmup", gpus=world, seconds=round(seconds, 2)))
        seconds, _ = timed(lambda: engine.vae.decode(z.to(self.local.device)))
        self.record(dict(kind="decode", gpus=world, seconds=round(seconds, 3)))

    def passes(self, engine, world: int) -> None:
        cases = [(1, 10, False), (1, 18, False), (2, 18, False), (1, 18, True)]
        for rows, frames, go_fast in cases:
            inp = self.inputs(rows, frames)
            model = engine.transformer("distilled", go_fast=go_fast)
            backend = self.local.go_fast_attention_backend if go_fast else self.local.attention_backend
            with torch.no_grad():
                first, _ = timed(lambda: model(PassInputs(**inp, attention_backend=backend)))
                seconds, out = timed(lambda: model(PassInputs(**inp, attention_backend=backend)))
            row = dict(
                kind="pass",
                gpus=world,
                rows=rows,
                frames=frames,
                variant="go_fast" if go_fast else "exact",
                first_call_s=round(first, 2),
                seconds=round(seconds, 3),
            )
            ref = self.reference.get((rows, frames))
            if ref is not None:
                row |= dict(
                    rel_l2_vs_1gpu=round(rel_l2(out.cpu(), ref), 6),
                    max_abs_vs_1gpu=round(float((out.float().cpu() - ref).abs().max()), 5),
                )
            if rows == 2 and not go_fast:
                cache = StepCache()
                with torch.no_grad():
                    model(PassInputs(**inp, cache=cache, attention_backend=backend))
                    row["cached_pass_s"] = round(
                        timed(lambda: model(PassInputs(**inp, cache=cache, use_cache=True, attention_backend=backend)))[
                            0
                        ],
                        3,
                    )
            self.record(row)

    # -- chunks ----------------------------------------------------------------------------------
    def chunks(self, engine, world: int) -> None:
        height, width = self.size
        h, w = height // 8, width // 8
        cached = next(
            (r["cached_pass_s"] for r in reversed(self.rows) if r.get("gpus") == world and "cached_pass_s" in r), None
        )
        for spec in self.args.chunks:
            preset_name, which = spec.split("-")
            history_frames = 1 if which == "first" else 9
            history = chunk_noise(99, 0, (1, LATENT_CHANNELS, history_frames, h, w))
            noise = chunk_noise(7, 1, (1, LATENT_CHANNELS, history_frames + 9, h, w))
            for go_fast in (False, True) if preset_name == "distilled" and which == "later" else (False,):
                if self.over_budget():
                    self.record(dict(kind="chunk", gpus=world, chunk=spec, skipped="time budget"))
                    continue
                steps = self.args.full_steps if preset_name == "full" else None
                preset = resolve_preset(preset_name, steps, go_fast=go_fast)
                session = WorldSession.start(engine, preset, "a village street", 1, height, width, history=history)
                seconds, result = timed(lambda: session.generate_chunk(chunk_poses(single("w", 0.3)), "w", noise=noise))
                row = dict(
                    kind="chunk",
                    gpus=world,
                    chunk=spec,
                    go_fast=go_fast,
                    steps=preset.num_inference_steps,
                    seconds=round(seconds, 2),
                    denoise_s=round(result.seconds_denoise, 2),
                    decode_s=round(result.seconds_decode, 2),
                )
                if preset_name == "full" and cached is not None:
                    per_step = result.seconds_denoise / preset.num_inference_steps
                    row["estimate_50_steps_s"] = round(
                        35 * per_step + 15 * cached + seconds - result.seconds_denoise, 1
                    )
                self.record(row)

    def world(self, world: int) -> None:
        if world == 1:  # GPU 0 alone, same engine and code path as predict() on one GPU
            for rows, frames, go_fast in ((1, 10, False), (1, 18, True)):  # compile what the chunks use, untimed
                inp = self.inputs(rows, frames)
                backend = self.local.go_fast_attention_backend if go_fast else self.local.attention_backend
                with torch.no_grad():
                    self.local.transformer("distilled", go_fast=go_fast)(PassInputs(**inp, attention_backend=backend))
            self.warm_decode(self.local, 1)
            self.chunks(self.local, 1)
            return
        begin = time.perf_counter()
        runtime = ParallelRuntime.start(
            world, self.spec, self.local.transformer_config.num_heads, devices=self.devices[:world], timeout_s=600
        )
        engine = ParallelEngine(self.local, runtime)
        try:
            runtime.wait_ready()
            self.record(dict(kind="start", gpus=world, seconds=round(time.perf_counter() - begin, 1)))
            if self.args.head_chunks and (self.args.overlap_gpus is None or world in self.args.overlap_gpus):
                self.head_chunks(engine, world)
            if self.args.pack_placement:
                self.pack_placement(engine, world)
            if self.args.profile:
                self.profile(engine, world)
            if self.args.skip_passes:
                self.record(dict(kind="passes", gpus=world, skipped="--skip-passes"))
            else:
                self.passes(engine, world)
            self.warm_decode(engine, world)
            self.chunks(engine, world)
        finally:
            engine.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--gpus", type=int, nargs="+", default=[4, 2])
    parser.add_argument("--chunks", nargs="*", default=["distilled-later", "distilled-first", "full-later"])
    parser.add_argument("--full-steps", type=int, default=2)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument(
        "--eager-vae",
        dest="compile_vae",
        action="store_false",
        help="decode with the eager VAE decoder (default: compiled for full tiles, as predict())",
    )
    parser.add_argument(
        "--head-chunks",
        type=int,
        nargs="*",
        default=[1, 2, 3],
        help="Ulysses overlap settings compared on the 18-frame pass (empty: the default only)",
    )
    parser.add_argument(
        "--overlap-gpus",
        type=int,
        nargs="*",
        default=None,
        help="world sizes that get the --head-chunks comparison (default: all; the others use 1)",
    )
    parser.add_argument(
        "--no-reference",
        dest="reference",
        action="store_false",
        help="skip the one-GPU reference passes (no agreement columns)",
    )
    parser.add_argument("--profile", action="store_true", help="rank 0's kernel-time breakdown of one pass")
    parser.add_argument(
        "--pack-placement",
        action="store_true",
        help="exchange buffers packed in the compiled blocks vs eagerly, side by side",
    )
    parser.add_argument("--skip-passes", action="store_true", help="no pass table (head_chunks, profile, chunks only)")
    parser.add_argument("--budget-s", type=float, default=float("inf"), help="skip chunks after this many seconds")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    suite = Suite(args)
    if args.reference:
        suite.single_gpu_reference()
    for world in args.gpus:
        suite.world(world)
    env = dict(
        date=datetime.date.today().isoformat(),
        torch=torch.__version__,
        card=torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        gpus=torch.cuda.device_count(),
        size=suite.size,
        total_s=round(time.perf_counter() - suite.start, 1),
        peak_gib_rank0=round(torch.cuda.max_memory_allocated(0) / 2**30, 1) if torch.cuda.is_available() else None,
    )
    (args.out / "bench_parallel.json").write_text(json.dumps(dict(environment=env, rows=suite.rows), indent=2))
    print(json.dumps(env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
