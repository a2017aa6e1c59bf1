"""Cost of serving both presets from one 80 GB GPU, and a first look at regional torch.compile.

1. The service of full-size random weights with both presets preloaded (``GAMECRAFT_WEIGHTS=random
   GAMECRAFT_PRELOAD=distilled,full``, built by ``build_service`` without the warm-up): where the plan keeps one
   transformer on the GPU, each preset has its own and asking for the other parks the current one in pinned
   host RAM and brings the other in (``GameCraftEngine.transformer``). Times the first swap (which pins the
   host copy) and later swaps.
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

from gamecraft.serving.build import build_service  # noqa: E402
from gamecraft.serving.config import ServingConfig  # noqa: E402
from gamecraft.specs.geometry import LATENT_CHANNELS  # noqa: E402


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

    config = ServingConfig.from_env(weights="random", preload=("distilled", "full"), compile=False, gpus=1)
    service = build_service(config, warm=False)
    engine = service.engine
    swapping = service.plan.engine_config.one_transformer_on_gpu
    results["one_transformer_on_gpu"] = swapping
    if not swapping:
        raise SystemExit("the plan keeps both transformers on this GPU: nothing is swapped (GAMECRAFT_KEEP_BOTH?)")
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
                model(text.pass_inputs(x, t, tokens))

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
    service.close()
    (args.out / "preset_swap.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
