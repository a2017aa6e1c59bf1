"""Command line: ``python -m gamecraft generate …`` (videos) and ``python -m gamecraft preview …`` (camera path).

``generate`` runs the real pipeline. Without a GPU or without complete weights it writes a tiny random
weights directory and runs the same code on the CPU — the video is then a pipeline smoke run, not the
model's output, and the command says so loudly. Environment: ``GAMECRAFT_WEIGHTS`` (weights directory,
default ``./weights``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from contextlib import closing
from pathlib import Path

from gamecraft.pipeline.actions import parse_actions
from gamecraft.pipeline.camera import chunk_poses, world_poses
from gamecraft.media.preview import save_preview
from gamecraft.pipeline.trajectory import load_trajectory

log = logging.getLogger("gamecraft")

DEFAULT_IMAGE = Path(__file__).resolve().parent.parent / "assets" / "start.png"
TINY_SIZE = (128, 224)
SMOKE_BANNER = """
############################################################################################
#  NO GPU OR NO COMPLETE WEIGHTS: using TINY RANDOM WEIGHTS on the CPU ({reason}).
#  The videos below are a PIPELINE SMOKE RUN (noise-like frames), NOT GameCraft's output.
#  For real videos: a CUDA GPU and the weights in {weights} (see weights/README.md).
############################################################################################"""


def _preview(args: argparse.Namespace) -> int:
    if args.trajectory:
        chunks = load_trajectory(args.trajectory)
        labels = [f"trajectory chunk {i + 1}" for i in range(len(chunks))]
    else:
        segments = parse_actions(args.actions, args.speeds)
        chunks = [chunk_poses(s) for s in segments]
        labels = [s.describe() for s in segments]
    save_preview(args.out, chunks, labels)
    poses = world_poses(chunks)
    for j, label in enumerate(labels):
        p = poses[(j + 1) * 33]
        print(f"chunk {j + 1:>3}  {label:<28} end x={p[0, 3]:+.3f} y={p[1, 3]:+.3f} z={p[2, 3]:+.3f}")
    print(f"wrote {args.out}")
    return 0


def _engine_config(args: argparse.Namespace, preset_variant: str):
    import torch

    from gamecraft.engine import EngineConfig
    from gamecraft.weights import smoke_run_reason
    from gamecraft.testing.tiny_weights import write_tiny_weights

    weights = Path(args.weights or os.environ.get("GAMECRAFT_WEIGHTS", "weights"))
    reason = "--tiny given" if args.tiny else smoke_run_reason(weights, preset_variant, torch.cuda.is_available())
    if reason is None:
        return EngineConfig(weights, device="cuda", preload=(preset_variant,)), None
    print(SMOKE_BANNER.format(reason=reason, weights=weights), file=sys.stderr, flush=True)
    tiny_dir = Path(args.tiny_dir)
    if not (tiny_dir / "gamecraft_models").is_dir():
        write_tiny_weights(tiny_dir)
    return EngineConfig.for_cpu(tiny_dir, preload=(preset_variant,)), reason


def _load(config, gpus: int, smoke: bool):
    """The engine, its passes split over ``gpus`` GPUs when > 1 (gloo processes on the CPU for tiny
    smoke runs); the workers load while rank 0 does when the weights need no conversion."""
    import torch

    from gamecraft.engine import GameCraftEngine
    from gamecraft.parallel import check_world_size, load_parallel_engine
    from gamecraft.weights import transformer_config

    if gpus <= 1:
        return GameCraftEngine.load(config)
    if not smoke and gpus > torch.cuda.device_count():
        raise SystemExit(f"--gpus {gpus}: only {torch.cuda.device_count()} GPUs are visible")
    try:
        check_world_size(gpus, transformer_config(config.weights_dir).num_heads)
    except ValueError as err:
        raise SystemExit(f"--gpus {gpus}: {err}") from None
    devices = ["cpu"] * gpus if smoke else [f"cuda:{i}" for i in range(gpus)]
    return load_parallel_engine(config, gpus, devices)


def _generate(args: argparse.Namespace) -> int:
    from gamecraft.serving.generate import GenerationReport, GenerationRequest, generate
    from gamecraft.pipeline.presets import resolve_preset

    preset = resolve_preset(args.preset, args.steps, args.guidance)
    trajectory = load_trajectory(args.trajectory) if args.trajectory else None
    segments = () if trajectory is not None else parse_actions(args.actions, args.speeds)
    config, smoke = _engine_config(args, preset.variant)
    size = tuple(int(v) for v in args.size.split("x")) if args.size else (TINY_SIZE if smoke else (704, 1216))
    image = args.image if (args.image or args.video or args.continue_from) else DEFAULT_IMAGE
    request = GenerationRequest(
        prompt=args.prompt, preset=preset, segments=segments, trajectory=trajectory, image=image, video=args.video,
        continue_from=args.continue_from, seed=args.seed, negative_prompt=args.negative_prompt, size=size,
        fps=args.fps, last_frame=args.last_frame, camera_preview=args.camera_preview)
    engine = _load(config, args.gpus, smoke is not None)
    report = GenerationReport()
    start = time.perf_counter()
    stem = f"gamecraft-{args.seed if args.seed is not None else 'r'}-{int(time.time())}"
    try:
        with closing(generate(engine, request, Path(args.out), stem, report)) as outputs:  # Ctrl-C stops it
            for output in outputs:
                print(f"{output.kind:<10} {output.path}", flush=True)
    finally:
        if args.gpus > 1:
            engine.close()  # stop the worker processes
    print(f"seed {report.seed}; {len(report.chunk_seconds)} chunk(s) in {time.perf_counter() - start:.1f}s")
    if smoke:
        print(f"NOTE: pipeline smoke run with tiny random weights ({smoke}); not the model's output.", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gamecraft", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate a game video chunk by chunk")
    g.add_argument("--image", type=Path, help=f"start image (default: {DEFAULT_IMAGE.name} shipped in assets/)")
    g.add_argument("--video", type=Path, help="start from a video (its last 33 frames)")
    g.add_argument("--continue-from", type=Path, help="a state file from an earlier run")
    g.add_argument("--prompt", default="A cozy village street in the morning, cinematic, realistic.")
    g.add_argument("--negative-prompt", default="", help="unconditional prompt (reference: always empty)")
    g.add_argument("--actions", default='["w", "left_rot"]', help="JSON list of actions")
    g.add_argument("--speeds", default="[0.3, 20]", help="JSON list of speeds")
    g.add_argument("--trajectory", type=Path, help="custom camera path (RealEstate10K text or JSON c2w)")
    g.add_argument("--preset", default="distilled", choices=("distilled", "full"))
    g.add_argument("--steps", type=int, help="override the preset's number of steps")
    g.add_argument("--guidance", type=float, help="override the preset's guidance scale")
    g.add_argument("--seed", type=int, help="random when omitted (printed)")
    g.add_argument("--size", help="HxW, multiples of 16 (default 704x1216; 128x224 for tiny smoke runs)")
    g.add_argument("--fps", type=float, default=25.0)
    g.add_argument("--weights", help="weights directory (default $GAMECRAFT_WEIGHTS or ./weights)")
    g.add_argument("--tiny", action="store_true", help="force the tiny random-weights smoke run")
    g.add_argument("--tiny-dir", default=".cache/tiny-weights", help="where tiny weights are written")
    g.add_argument("--last-frame", action="store_true", help="also write the last frame as PNG")
    g.add_argument("--camera-preview", action="store_true", help="also write the camera-path preview PNG")
    g.add_argument("--gpus", type=int, default=1,
                   help="split every pass over this many GPUs (1, 2, 3, 4, 6, 8; processes on the CPU for smoke runs)")
    g.add_argument("--out", type=Path, default=Path("outputs"))

    p = sub.add_parser("preview", help="render the top-down camera path of an action list to a PNG")
    p.add_argument("--actions", default='["w", "left_rot", "w+left_rot"]', help="JSON list of actions")
    p.add_argument("--speeds", default="[0.5, 30, [0.5, 30]]", help="JSON list of speeds (one entry per action)")
    p.add_argument("--trajectory", type=Path, help="a RealEstate10K text or JSON c2w file instead of actions")
    p.add_argument("--out", type=Path, default=Path("outputs/camera_preview.png"))

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _generate(args) if args.command == "generate" else _preview(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
