"""Whole predictions through ``gamecraft.serving.generate.generate`` (what the predictor and the CLI run): the time
between consecutive chunk files, with the mp4 writes in line vs overlapped with the next chunk.

Full-size random weights on every GPU (``gamecraft.testing.random_weights``), the predictor's settings (compiled
blocks and VAE decoder, FlashAttention-3 when installed), 704×1216, the distilled preset. The engine is
warmed up exactly as ``setup()`` does (``measure_costs``); then each variant runs the same request
(start image, ``--chunks`` actions, seed 1), alternating, ``--repeats`` times:

* ``inline``: each chunk's two H.264 encodes (its mp4 and the whole video) run before the next chunk starts;
* ``ahead``: the next chunk is generated on a thread while they run (``overlap_writes``, the default).

Rows: every chunk interval (seconds since the previous chunk's file, the first from the request's
start, which includes encoding the start image and the prompt), each chunk's denoise and decode
seconds, the whole request, and the CPU cost of one chunk's writes measured alone. ``same_outputs``
checks that every variant wrote the same bytes. ``--log-steps`` logs every denoising step with a
millisecond timestamp.

    python benchmarks/bench_prediction.py --out $OUT --gpus 4 --chunks 4
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

from gamecraft.pipeline.actions import parse_actions  # noqa: E402
from gamecraft.serving.budget import measure_costs  # noqa: E402
from gamecraft.serving.generate import GenerationReport, GenerationRequest, generate  # noqa: E402
from gamecraft.media.video import VideoWriter, write_mp4  # noqa: E402
from gamecraft.pipeline.presets import resolve_preset  # noqa: E402

IMAGE = Path(__file__).resolve().parents[1] / "assets" / "start.png"
ACTIONS = ["w", "left_rot", "d", "s", "right_rot", "a"]
VARIANTS = ("inline", "ahead")
SPEEDS = [0.3, 20, 0.2, 0.3, 15, 0.2]


def build_engine(args):
    """Rank 0's engine (and its workers when ``--gpus`` > 1), configured as ``predict.setup()`` does."""
    from gamecraft.model.attention import fa3_available
    from gamecraft.parallel import start_parallel_engine
    from gamecraft.testing.random_weights import random_engine, random_worker_spec, tiny_random_engine

    if args.tiny:
        engine, size, speed, devices = tiny_random_engine(), (64, 96), {}, ["cpu"] * args.gpus
    else:
        speed = dict(compile=True, compile_vae=True, attention_backend="fa3" if fa3_available() else "sdpa")
        engine, size = random_engine(device="cuda:0", **speed), (704, 1216)
        devices = [f"cuda:{i}" for i in range(args.gpus)]
    if args.gpus > 1:
        engine = start_parallel_engine(engine, random_worker_spec(args.tiny, **speed), args.gpus, devices)
    return engine, size


def request_for(args, size) -> GenerationRequest:
    actions, speeds = ACTIONS[:args.chunks], SPEEDS[:args.chunks]
    return GenerationRequest(prompt="a medieval village street", preset=resolve_preset("distilled"),
                             segments=parse_actions(json.dumps(actions), json.dumps(speeds)), image=IMAGE, seed=1,
                             size=size, return_state=False)


def write_cost(size, out: Path) -> float:
    """Seconds of CPU for one chunk's writes (33 frames: its own mp4 + appended to a whole video)."""
    frames = torch.rand(33, *size, 3, generator=torch.Generator().manual_seed(0))
    begin = time.perf_counter()
    write_mp4(frames, out / "alone-chunk.mp4")
    with VideoWriter(out / "alone-video.mp4") as video:
        video.append(frames)
    return time.perf_counter() - begin


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true", help="tiny CPU models (tests the script)")
    parser.add_argument("--gpus", type=int, default=1, help="split every pass over this many GPUs (gloo ranks)")
    parser.add_argument("--chunks", type=int, default=4, choices=range(1, len(ACTIONS) + 1))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--log-steps", action="store_true", help="log each step and chunk with a timestamp")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.log_steps:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s.%(msecs)03d %(name)s: %(message)s",
                            datefmt="%H:%M:%S")
    rows: list[dict] = []
    start = time.perf_counter()

    def record(row: dict) -> None:
        row["elapsed_s"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        print(row, flush=True)
        (args.out / "bench_prediction_rows.json").write_text(json.dumps(rows, indent=1))

    engine, size = build_engine(args)
    record(dict(kind="engine", gpus=args.gpus, seconds=round(time.perf_counter() - start, 1)))
    try:
        begin = time.perf_counter()
        costs = measure_costs(engine, *size)  # setup()'s warm-up: compiles both chunk shapes and the decoder
        record(dict(kind="warmup", seconds=round(time.perf_counter() - begin, 1), costs=vars(costs)))
        work = Path(tempfile.mkdtemp(prefix="bench-prediction-"))
        record(dict(kind="writes_alone", seconds=round(write_cost(size, work), 3)))
        outputs: dict[str, list[bytes]] = {}
        for repeat in range(args.repeats):
            for variant in args.variants:
                out = work / f"{variant}-{repeat}"
                report = GenerationReport()
                begin = time.perf_counter()
                files = list(generate(engine, request_for(args, size), out, "run", report,
                                      overlap_writes=variant == "ahead"))
                wall = time.perf_counter() - begin
                outputs.setdefault(variant, [f.path.read_bytes() for f in files])
                later = report.chunk_seconds[1:]
                record(dict(kind="prediction", variant=variant, repeat=repeat, gpus=args.gpus, chunks=args.chunks,
                            chunk_intervals_s=[round(s, 3) for s in report.chunk_seconds], wall_s=round(wall, 2),
                            later_chunk_mean_s=round(sum(later) / len(later), 3) if later else None,
                            denoise_s=[round(s, 3) for s in report.denoise_seconds],
                            decode_s=[round(s, 3) for s in report.decode_seconds]))
        record(dict(kind="same_outputs", value=all(o == outputs[args.variants[0]] for o in outputs.values())))
        env = dict(date=datetime.date.today().isoformat(), torch=torch.__version__,
                   card=torch.cuda.get_device_name() if torch.cuda.is_available() and not args.tiny else "cpu",
                   gpus=args.gpus, cpus=os.cpu_count(), size=list(size), total_s=round(time.perf_counter() - start, 1))
        (args.out / "bench_prediction.json").write_text(json.dumps(dict(environment=env, rows=rows), indent=2))
        print(json.dumps(env), flush=True)
    finally:
        if hasattr(engine, "runtime"):
            engine.close()  # (stopping 3 workers took ≈ 20 s on 4 H200s: written before it)
    return 0


if __name__ == "__main__":
    sys.exit(main())
