"""Command line: ``python -m gamecraft generate …`` (videos) and ``python -m gamecraft preview …`` (camera path).

``generate`` runs the real pipeline, built by ``gamecraft.serving.build.build_service`` exactly as the Cog
predictor builds it (the environment of ``gamecraft.serving.config`` applies; flags win). Without a GPU or
without complete weights it writes a tiny random weights directory and runs the same code on the CPU — the
video is then a pipeline smoke run, not the model's output, and the command says so loudly.
"""

from __future__ import annotations

import argparse
import logging
import sys
from contextlib import closing
from dataclasses import fields, replace
from pathlib import Path

from gamecraft.media.preview import save_preview
from gamecraft.pipeline.actions import parse_actions
from gamecraft.pipeline.camera import chunk_poses, world_poses
from gamecraft.pipeline.trajectory import load_trajectory
from gamecraft.serving.build import build_service
from gamecraft.serving.config import ConfigError, ServingConfig, parse_size
from gamecraft.serving.events import FileReady, Finished
from gamecraft.serving.plan import plan_service
from gamecraft.serving.request import RequestInputs, prepare_request, warm_up_for

log = logging.getLogger("gamecraft")

DEFAULT_IMAGE = Path(__file__).resolve().parent.parent / "assets" / "start.png"
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


def serving_config(args: argparse.Namespace) -> ServingConfig:
    """The CLI's :class:`ServingConfig`: the environment's, with the flags given on top (``--gpus`` unset
    leaves ``GAMECRAFT_GPUS``); the requested preset's transformer is the one loaded, and without a GPU or
    complete weights tiny weights run on the CPU."""
    flags = dict(preload=(args.preset,), fallback_to_tiny=True, tiny_dir=Path(args.tiny_dir))
    if args.gpus is not None:
        flags["gpus"] = args.gpus
    if args.tiny:
        flags["weights"] = "tiny"
    elif args.weights:
        flags["weights"] = str(args.weights)
    if args.size:
        flags["size"] = flags["tiny_size"] = parse_size(args.size, "--size")
    return ServingConfig.from_env(**flags)


def request_inputs(args: argparse.Namespace) -> RequestInputs:
    """The flags as the API's inputs (the flags' destinations are the inputs' names); without a start, the
    image shipped in assets/."""
    inputs = RequestInputs(**{f.name: getattr(args, f.name) for f in fields(RequestInputs)})
    if inputs.image is None and inputs.video is None and inputs.continue_from is None:
        inputs = replace(inputs, image=DEFAULT_IMAGE)
    return inputs


def _generate(args: argparse.Namespace) -> int:
    config, inputs = serving_config(args), request_inputs(args)
    try:
        plan = plan_service(config)
    except ConfigError as err:
        given = getattr(args, err.option, None) is not None
        where = f"--{err.option} {err.value}" if given else f"GAMECRAFT_{err.option.upper()}={err.value}"
        raise SystemExit(f"{where}: {err}") from None
    if plan.source == "tiny":
        reason = plan.smoke_reason or "--tiny given"
        print(SMOKE_BANNER.format(reason=reason, weights=config.weights), file=sys.stderr, flush=True)
    # the request is checked before any model loads, and the warm-up compiles exactly its pass shapes
    service = build_service(config, plan=replace(plan, warm_shapes=warm_up_for(plan, inputs)))
    finished = None
    try:
        prepared = prepare_request(service, inputs)  # the time budget, as the predictor's
        prepared.log(log)
        with closing(service.generate(prepared.request, Path(args.out))) as events:  # Ctrl-C stops it
            for event in events:
                if isinstance(event, FileReady):
                    print(f"{event.kind:<10} {event.path}", flush=True)
                elif isinstance(event, Finished):
                    finished = event
    finally:
        service.close()  # stops multi-GPU worker processes
    print(f"seed {finished.seed}; {finished.chunks} chunk(s) in {finished.seconds:.1f}s")
    if plan.source == "tiny":
        print(
            f"NOTE: pipeline smoke run with tiny random weights ({plan.smoke_reason or '--tiny given'}); "
            "not the model's output.",
            file=sys.stderr,
        )
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
    g.add_argument("--speeds", dest="action_speeds", default="[0.3, 20]", help="JSON list of speeds")
    g.add_argument("--trajectory", type=Path, help="custom camera path (RealEstate10K text or JSON c2w)")
    g.add_argument("--preset", default="distilled", choices=("distilled", "full"))
    g.add_argument("--steps", dest="num_inference_steps", type=int, help="override the preset's number of steps")
    g.add_argument("--guidance", dest="guidance_scale", type=float, help="override the preset's guidance scale")
    g.add_argument("--seed", type=int, help="random when omitted (printed)")
    g.add_argument("--size", help="HxW, multiples of 16 (default 704x1216; 128x224 for tiny smoke runs)")
    g.add_argument("--fps", type=float, default=25.0)
    g.add_argument("--weights", help="weights directory (default $GAMECRAFT_WEIGHTS or ./weights)")
    g.add_argument("--tiny", action="store_true", help="force the tiny random-weights smoke run")
    g.add_argument("--tiny-dir", default=".cache/tiny-weights", help="where tiny weights are written")
    g.add_argument(
        "--last-frame", dest="return_last_frame", action="store_true", help="also write the last frame as PNG"
    )
    g.add_argument("--camera-preview", action="store_true", help="also write the camera-path preview PNG")
    g.add_argument(
        "--gpus",
        type=int,
        help="split every pass over this many GPUs (default: every visible one; "
        "1, 2, 3, 4, 6 or 8; processes on the CPU for smoke runs)",
    )
    g.add_argument("--go-fast", action="store_true", help="fp8 transformer (and quantized attention where supported)")
    g.add_argument("--out", type=Path, default=Path("outputs"))
    g.set_defaults(return_state=True)  # the state file is always written

    p = sub.add_parser("preview", help="render the top-down camera path of an action list to a PNG")
    p.add_argument("--actions", default='["w", "left_rot", "w+left_rot"]', help="JSON list of actions")
    p.add_argument("--speeds", default="[0.5, 30, [0.5, 30]]", help="JSON list of speeds (one entry per action)")
    p.add_argument("--trajectory", type=Path, help="a RealEstate10K text or JSON c2w file instead of actions")
    p.add_argument("--out", type=Path, default=Path("outputs/camera_preview.png"))

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _generate(args) if args.command == "generate" else _preview(args)
    except ValueError as err:  # a RequestError, or a flag the configuration refuses: one line
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
