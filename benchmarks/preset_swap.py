"""Cost of serving both presets from one 80 GB GPU, and a first look at regional torch.compile.

1. Two full-size random transformers registered in one engine as the two presets' variants; asking
   for the other preset parks the current transformer in pinned host RAM and brings the other in
   (``GameCraftEngine.transformer``). Times the first swap (which pins the host copy) and later swaps.
2. (``--compile``) one 18-latent-frame pass, eager vs every double/single block wrapped in
   ``torch.compile`` (default mode, static shapes), with the compile time.

    python benchmarks/preset_swap.py --out $OUT [--compile]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gamecraft.model import GameCraftTransformer, PassInputs, TransformerConfig, init_random_  # noqa: E402
from gamecraft.serving.build import random_engine_kwargs  # noqa: E402
from gamecraft.serving.config import ServingConfig  # noqa: E402
from gamecraft.serving.plan import plan_service  # noqa: E402
from gamecraft.specs.geometry import LATENT_CHANNELS  # noqa: E402
from gamecraft.testing.random_weights import random_engine  # noqa: E402


def timed(fn) -> float:
    torch.cuda.synchronize()
    begin = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - begin


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"card": torch.cuda.get_device_name(), "torch": torch.__version__}

    # the planner's kernels for random weights, with the swapping of the real two-checkpoint setup
    plan = plan_service(ServingConfig.from_env(weights="random", compile=False, gpus=1))
    engine = random_engine(variants=("distilled",), **{**random_engine_kwargs(plan), "one_transformer_on_gpu": True})
    second = GameCraftTransformer(TransformerConfig.production(), dtype=torch.bfloat16, device="meta")
    init_random_(second, 1, device=torch.device("cuda"))
    engine.register_transformer("full", second.eval().requires_grad_(False))
    results["gpu_memory_two_transformers_gib"] = round(torch.cuda.memory_allocated() / 2**30, 1)
    swaps = []
    for variant in ("full", "distilled", "full", "distilled"):
        seconds = timed(lambda: engine.transformer(variant))
        swaps.append(
            {
                "to": variant,
                "seconds": round(seconds, 2),
                "gpu_memory_gib": round(torch.cuda.memory_allocated() / 2**30, 1),
            }
        )
        print(swaps[-1], flush=True)
    results["swaps"] = swaps

    if args.compile:
        model = engine.transformer("distilled")
        text = engine.encode_text("a village", "", guidance=False)
        x = torch.zeros(1, 2 * LATENT_CHANNELS + 1, 18, 88, 152, device="cuda", dtype=model.dtype)
        cam = torch.zeros(1, 33, 6, 704, 1216, device="cuda")
        tokens = model.camera_tokens(cam, 18)
        t = torch.full((1,), 1000.0, device="cuda")

        def run():
            with torch.no_grad():
                model(
                    PassInputs(
                        x=x,
                        t=t,
                        text_states=text.states,
                        text_mask=text.mask,
                        text_states_2=text.pooled,
                        camera_tokens=tokens,
                        text_lengths=text.lengths,
                    )
                )

        run()
        eager = [timed(run) for _ in range(2)]
        for blocks in (model.double_blocks, model.single_blocks):
            for i, block in enumerate(blocks):
                blocks[i] = torch.compile(block)
        compile_s = timed(run)
        compiled = [timed(run) for _ in range(3)]
        results["pass_18_frames"] = {
            "eager_s": [round(v, 3) for v in eager],
            "compile_first_call_s": round(compile_s, 1),
            "compiled_s": [round(v, 3) for v in compiled],
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1),
        }
        print(results["pass_18_frames"], flush=True)
    (args.out / "preset_swap.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
