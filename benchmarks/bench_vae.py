"""VAE decode of one chunk (9 latent frames at 704×1216 → 33 frames) under cuDNN settings, side by side.

Variants: the default (fp16 autocast, the reference's spatial tiling), ``cudnn.benchmark`` (cuDNN picks the
fastest convolution algorithm per shape), channels-last-3d weights and inputs, both, and the decoder under
``torch.compile`` (``GameCraftVae.compile_decoder``) for the full tiles only or for every tile shape. Each variant's
output is compared with the first variant's (they differ only by rounding).

    python benchmarks/bench_vae.py --out $OUT
    python benchmarks/bench_vae.py --tiny --out /tmp/vae     # CPU smoke test
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

from gamecraft.model.vae import GameCraftVae  # noqa: E402
from gamecraft.model.vae_config import build_model  # noqa: E402
from gamecraft.testing.random_weights import PRODUCTION_VAE, _randomize_  # noqa: E402
from gamecraft.testing.tiny_weights import TINY_VAE  # noqa: E402

VARIANTS = ("default", "cudnn_benchmark", "channels_last_3d", "both", "compiled_full_tiles", "compiled_all_tiles")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS), help="compared with the first one listed"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cpu" if args.tiny else "cuda")
    config, dtype, (h, w) = (
        (TINY_VAE, torch.float32, (20, 28)) if args.tiny else (PRODUCTION_VAE, torch.float16, (88, 152))
    )
    model = build_model(config).to_empty(device=device).to(dtype)
    _randomize_(model, torch.Generator(device).manual_seed(0))
    vae = GameCraftVae(model.eval().requires_grad_(False), config)
    z = torch.randn(1, config.latent_channels, 9, h, w, generator=torch.Generator().manual_seed(1)).to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def decode_times(fmt=torch.contiguous_format):
        times = []
        for _ in range(1 + args.repeats):
            sync()
            begin = time.perf_counter()
            out = vae.decode(z.contiguous(memory_format=fmt))
            sync()
            times.append(time.perf_counter() - begin)
        return times, out.float().cpu()

    rows, reference = [], None
    for name in args.variants:
        benchmark, channels_last = name in ("cudnn_benchmark", "both"), name in ("channels_last_3d", "both")
        torch.backends.cudnn.benchmark = benchmark
        fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
        vae.model.to(memory_format=fmt)
        vae.uncompile_decoder()
        if name.startswith("compiled"):  # GameCraftVae.compile_decoder; the first call compiles
            vae.compile_decoder("full" if name == "compiled_full_tiles" else "all")
        times, out = decode_times(fmt)
        reference = out if reference is None else reference
        rows.append(
            dict(
                variant=name,
                first_s=round(times[0], 2),
                seconds=round(min(times[1:]), 3),
                max_abs_vs_first=float((out - reference).abs().max()),
                rel_l2_vs_first=float((out - reference).norm() / reference.norm()),
            )
        )
        print(rows[-1], flush=True)
    env = dict(
        date=datetime.date.today().isoformat(),
        torch=torch.__version__,
        card=torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        cudnn=torch.backends.cudnn.version(),
        latents=list(z.shape),
    )
    (args.out / "bench_vae.json").write_text(json.dumps(dict(environment=env, rows=rows), indent=2))
    print(json.dumps(env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
