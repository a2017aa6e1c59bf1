"""Whole predictions through ``gamecraft.serving.generate.generate`` (what the predictor and the CLI run), on an
engine built by ``gamecraft.serving.build.build_service`` exactly as ``setup()`` builds it.

Default: full-size random weights (``GAMECRAFT_WEIGHTS=random``), 704×1216, the predictor's kernels and
compilation, warmed up on every pass shape of the cases' presets and the go_fast twin (``--warm-all``: of both
presets, as ``setup()`` does). Then each case runs the same kind of request (start image, ``--chunks`` actions,
seed 1), one after another:

* ``--cases``: ``PRESET[:go_fast][:STEPS]`` (e.g. ``distilled``, ``distilled:go_fast``, ``full:go_fast:4``): preset,
  go_fast, optional step override (the full preset's step cache only runs at its 50 steps);
* ``--variants``, run in this order: ``inline`` (each chunk's writes before the next chunk starts),
  ``ahead`` (the next chunk is generated while the mp4s are written: what the predictor runs), and
  ``all_tiles`` (``ahead`` with the VAE decoder compiled for every tile shape, not only the full ones, as
  ``GAMECRAFT_VAE_COMPILE=all`` does: compiled right before it, its compile time recorded; it stays so for
  later cases). ``same_outputs`` checks that ``inline`` and ``ahead`` wrote the same chunk files
  (``all_tiles`` differs by fp16 rounding in the edge tiles).

Rows: the setup (seconds, every warm-up shape's pass time and peak memory), then per prediction every chunk
interval (seconds since the previous chunk's file; the first from the request's start, which includes encoding
the start image and the prompt), each chunk's denoise / decode seconds, every step's seconds (so a step that
compiled would show), the mean later chunk, peak GPU memory, and whether the step times match the warm-up's
pass times (no compilation during requests). ``--memory-gib`` caps the usable GPU memory
(``torch.cuda.set_per_process_memory_fraction``) to stand in for a smaller card.

    python benchmarks/bench_prediction.py --out $OUT --cases distilled distilled:go_fast full:go_fast:2
    python benchmarks/bench_prediction.py --tiny --gpus 2 --out /tmp/bp     # CPU (gloo) smoke test
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gamecraft.media.video import VideoWriter, write_mp4  # noqa: E402
from gamecraft.pipeline.actions import parse_actions  # noqa: E402
from gamecraft.pipeline.presets import resolve_preset  # noqa: E402
from gamecraft.serving.build import build_service  # noqa: E402
from gamecraft.serving.config import ServingConfig  # noqa: E402
from gamecraft.serving.events import FileReady, Finished, StepDone  # noqa: E402
from gamecraft.serving.generate import GenerationRequest  # noqa: E402

IMAGE = Path(__file__).resolve().parents[1] / "assets" / "start.png"
ACTIONS = ["w", "left_rot", "d", "s", "right_rot", "a"]
SPEEDS = [0.3, 20, 0.2, 0.3, 15, 0.2]
VARIANTS = ("inline", "ahead", "all_tiles")


def parse_case(text: str) -> tuple[str, bool, int | None]:
    """``PRESET[:go_fast][:STEPS]`` → (preset, go_fast, steps); ``fast`` is read as ``go_fast`` (the
    commands recorded in BENCHMARKS.md before the rename)."""
    parts = text.split(":")
    preset, go_fast, steps = parts[0], False, None
    for part in parts[1:]:
        if part in ("go_fast", "fast"):
            go_fast = True
        else:
            steps = int(part)
    return preset, go_fast, steps


def config_for(args) -> ServingConfig:
    """The configuration ``setup()`` would read from the environment, with this run's choices on top."""
    presets = tuple(dict.fromkeys(parse_case(c)[0] for c in args.cases))
    overrides = dict(gpus=args.gpus, weights="tiny" if args.tiny else "random", preload=presets)
    if not args.warm_all:  # the warm-up compiles only the shapes this run's presets use (minutes less)
        overrides["warm_presets"] = presets
    if args.tiny:
        overrides.update(tiny_size=(64, 96), tiny_dir=Path(tempfile.mkdtemp(prefix="bench-prediction-tiny-")))
    if args.attention:
        overrides["attention"] = args.attention
    if args.no_compile:
        overrides["compile"] = False
    if args.gpu_override:
        overrides["gpu_override"] = args.gpu_override
    return ServingConfig.from_env(**overrides)


def request_for(args, case: str, size) -> GenerationRequest:
    preset, go_fast, steps = parse_case(case)
    actions, speeds = ACTIONS[: args.chunks], SPEEDS[: args.chunks]
    return GenerationRequest(
        prompt="a medieval village street",
        preset=resolve_preset(preset, steps, go_fast=go_fast),
        segments=parse_actions(json.dumps(actions), json.dumps(speeds)),
        image=IMAGE,
        seed=1,
        size=size,
        return_state=False,
    )


def write_cost(size, out: Path) -> float:
    """Seconds of CPU for one chunk's writes (33 frames: its own mp4 + appended to a whole video)."""
    frames = torch.rand(33, *size, 3, generator=torch.Generator().manual_seed(0))
    begin = time.perf_counter()
    write_mp4(frames, out / "alone-chunk.mp4")
    with VideoWriter(out / "alone-video.mp4") as video:
        video.append(frames)
    return time.perf_counter() - begin


def compile_all_tiles(engine, size) -> float:
    """Compile the VAE decoder for every tile shape (``GAMECRAFT_VAE_COMPILE=all``); seconds of the decode
    that compiles them."""
    engine.vae.compile_decoder(scope="all")
    latents = torch.zeros(1, 16, 9, size[0] // 8, size[1] // 8, device=engine.device)
    begin = time.perf_counter()
    engine.decode(latents)
    if latents.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - begin


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true", help="tiny CPU models (tests the script)")
    parser.add_argument("--gpus", type=int, default=1, help="split every pass over this many GPUs (gloo ranks)")
    parser.add_argument("--chunks", type=int, default=3, choices=range(1, len(ACTIONS) + 1))
    parser.add_argument("--cases", nargs="+", default=["distilled"], help="PRESET[:go_fast][:STEPS] per prediction")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=["ahead", "all_tiles"])
    parser.add_argument("--attention", help="force an attention backend (e.g. sdpa-cudnn)")
    parser.add_argument("--gpu-override", help="plan as if on NAME:CAPABILITY:GIB (e.g. L40S:8.9:44.4)")
    parser.add_argument("--memory-gib", type=float, help="cap usable GPU memory (set_per_process_memory_fraction)")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--warm-all", action="store_true", help="warm every preset's shapes, as setup() does")
    parser.add_argument("--log-steps", action="store_true", help="log each step and chunk with a timestamp")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO if args.log_steps else logging.WARNING,
        format="%(asctime)s.%(msecs)03d %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    rows: list[dict] = []
    start = time.perf_counter()

    def record(row: dict) -> None:
        row["elapsed_s"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
        (args.out / "bench_prediction_rows.json").write_text(json.dumps(rows, indent=1))

    cuda = torch.cuda.is_available() and not args.tiny
    if args.memory_gib and cuda:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_gib * 2**30 / total))
        record(dict(kind="memory_cap", gib=args.memory_gib, fraction=round(args.memory_gib * 2**30 / total, 4)))
    served = build_service(config_for(args))
    engine, plan, warm = served.engine, served.plan, served.warm_up
    record(
        dict(
            kind="setup",
            gpus=plan.world_size,
            seconds=round(served.setup_seconds, 1),
            plan=plan.summary,
            warm_up={
                str(shape): dict(seconds=round(s, 3), peak_gib=round(warm.peak_bytes[shape] / 2**30, 2))
                for shape, s in warm.pass_seconds.items()
            },
            decode_s=round(warm.decode_seconds, 3),
        )
    )
    try:
        work = Path(tempfile.mkdtemp(prefix="bench-prediction-"))
        outputs: dict[str, list[bytes]] = {}
        record(dict(kind="writes_alone", seconds=round(write_cost(plan.size, work), 3)))
        same, all_tiles = True, False
        variants = [v for v in VARIANTS if v in args.variants]
        for case in args.cases:
            for variant in variants:
                if variant == "all_tiles" and engine.vae.decoder_compiled and not all_tiles:
                    all_tiles = True
                    record(dict(kind="compile_all_tiles", seconds=round(compile_all_tiles(engine, plan.size), 1)))
                out = work / f"{case.replace(':', '-')}-{variant}"
                request = request_for(args, case, plan.size)
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                begin = time.perf_counter()
                events = list(served.generate(request, out, overlap_writes=variant != "inline"))
                wall = time.perf_counter() - begin
                finished = next(e for e in events if isinstance(e, Finished))
                steps = [round(e.seconds, 3) for e in events if isinstance(e, StepDone)]
                files = [e.path.read_bytes() for e in events if isinstance(e, FileReady) and e.kind == "chunk"]
                if variant != "all_tiles":
                    same = same and files == outputs.setdefault(case, files)
                later = finished.chunk_seconds[1:]
                record(
                    dict(
                        kind="prediction",
                        case=case,
                        variant=variant,
                        gpus=plan.world_size,
                        chunks=args.chunks,
                        chunk_intervals_s=[round(s, 3) for s in finished.chunk_seconds],
                        wall_s=round(wall, 2),
                        first_chunk_s=round(finished.chunk_seconds[0], 3),
                        later_chunk_mean_s=round(sum(later) / len(later), 3) if later else None,
                        denoise_s=[round(s, 3) for s in finished.denoise_seconds],
                        decode_s=[round(s, 3) for s in finished.decode_seconds],
                        step_s=steps,
                        peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
                    )
                )
        record(dict(kind="same_outputs", value=same))  # every variant of a case wrote the same chunk files
        env = dict(
            date=datetime.date.today().isoformat(),
            torch=torch.__version__,
            card=torch.cuda.get_device_name() if cuda else "cpu",
            gpus=args.gpus,
            cpus=os.cpu_count(),
            size=list(plan.size),
            total_s=round(time.perf_counter() - start, 1),
        )
        (args.out / "bench_prediction.json").write_text(json.dumps(dict(environment=env, rows=rows), indent=2))
        print(json.dumps(env), flush=True)
    finally:
        served.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
