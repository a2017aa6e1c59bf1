"""One transformer pass at 704x1216: our GameCraft transformer vs a plain diffusers HunyuanVideo model.

Both models get random weights in bf16, built on the meta device and materialised directly on the
GPU (no CPU copy). Per configuration (latent frames x batch) the script reports the median
seconds of ``--repeats`` passes after ``--warmup`` passes (``torch.cuda.synchronize`` around each)
and the peak GPU memory, then frees the model before building the next one.

* ours: ``GameCraftTransformer`` with precomputed camera tokens and RoPE (what the sampler does
  per step), text padding trimmed per row, attention backend ``sdpa`` (cuDNN first).
* diffusers: ``HunyuanVideoTransformer3DModel`` (in_channels 33, no guidance embedding, same
  dims), which attends with a padding mask; backend ``_native_cudnn`` (falls back to ``native``
  if that raises).

Text: ``--text-len`` slots, row 0 (uncond) ``--uncond-valid`` valid tokens, row 1 (cond)
``--valid``. ``--tiny`` runs a tiny config on CPU in float32 to test the script.

    python benchmarks/bench_transformer.py --out outputs/bench            # GPU, full size
    python benchmarks/bench_transformer.py --tiny --out /tmp/bench        # CPU smoke test
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from gamecraft.model import GameCraftTransformer, PassInputs, TransformerConfig, init_random_, rope_tables  # noqa: E402

logger = logging.getLogger("bench_transformer")
VAE_SPATIAL = 8
CAMERA_FRAMES = 33


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny config on CPU (float32) to test the script")
    p.add_argument("--frames", type=int, nargs="+", default=[10, 18], help="latent frames per pass")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2], help="batch sizes (2 = CFG)")
    p.add_argument("--height", type=int, default=None, help="pixels (default 704; tiny 64)")
    p.add_argument("--width", type=int, default=None, help="pixels (default 1216; tiny 96)")
    p.add_argument("--text-len", type=int, default=None, help="text slots (default 256; tiny 32)")
    p.add_argument("--valid", type=int, default=None, help="valid tokens of the cond row (default 60; tiny 12)")
    p.add_argument("--uncond-valid", type=int, default=None, help="valid tokens of the uncond row (default 7)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument(
        "--ours-backends", nargs="+", default=["sdpa"], help="first one for every config, the others for batch 1 only"
    )
    p.add_argument("--diffusers-backend", default="_native_cudnn")
    p.add_argument("--skip-diffusers", action="store_true")
    p.add_argument("--skip-ours", action="store_true")
    p.add_argument(
        "--time-budget-s",
        type=float,
        default=float("inf"),
        help="skip remaining measurements once this much time has passed",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("outputs/bench_transformer"))
    args = p.parse_args(argv)
    defaults = (
        dict(height=64, width=96, text_len=32, valid=12, uncond_valid=5)
        if args.tiny
        else dict(height=704, width=1216, text_len=256, valid=60, uncond_valid=7)
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
        self.dtype = torch.float32 if self.device.type == "cpu" else torch.bfloat16
        self.config = TransformerConfig.tiny() if args.tiny else TransformerConfig.production()
        self.start = time.perf_counter()
        self.results: list[dict] = []
        self.args.out.mkdir(parents=True, exist_ok=True)

    # -- helpers --------------------------------------------------------------------------------
    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def over_budget(self) -> bool:
        return time.perf_counter() - self.start > self.args.time_budget_s

    def free(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def memory_gb(self) -> float | None:
        return torch.cuda.memory_allocated() / 1e9 if self.device.type == "cuda" else None

    def measure(self, fn) -> dict:
        for _ in range(self.args.warmup):
            fn()
        self.sync()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        finite = True
        for _ in range(self.args.repeats):
            t0 = time.perf_counter()
            out = fn()
            self.sync()
            times.append(time.perf_counter() - t0)
            finite = finite and bool(torch.isfinite(out).all())
            del out
        peak = torch.cuda.max_memory_allocated() / 1e9 if self.device.type == "cuda" else None
        return {"seconds_median": statistics.median(times), "seconds": times, "peak_gb": peak, "finite_output": finite}

    def inputs(self, frames: int, batch: int) -> dict:
        a, cfg = self.args, self.config
        g = torch.Generator(device=self.device).manual_seed(a.seed + 1)
        lh, lw = a.height // VAE_SPATIAL, a.width // VAE_SPATIAL
        lengths = ([a.uncond_valid, a.valid] * batch)[-batch:] if batch > 1 else [a.valid]
        mask = torch.arange(a.text_len, device=self.device)[None] < torch.tensor(lengths, device=self.device)[:, None]
        rnd = lambda *shape: torch.randn(*shape, generator=g, device=self.device, dtype=self.dtype)  # noqa: E731
        return dict(
            x=rnd(batch, cfg.img_in_channels, frames, lh, lw),
            t=torch.full((batch,), 900.0, device=self.device),
            text_states=rnd(batch, a.text_len, cfg.text_states_dim),
            text_mask=mask.long(),
            text_states_2=rnd(batch, cfg.text_states_dim_2),
            cam=rnd(batch, CAMERA_FRAMES, cfg.camera_in_channels, a.height, a.width),
            text_lengths=lengths,
        )

    def record(self, entry: dict) -> None:
        entry["elapsed_s"] = round(time.perf_counter() - self.start, 1)
        logger.info("%s", json.dumps(entry))
        self.results.append(entry)
        self.write()

    def configs(self):
        for batch in self.args.batches:
            for frames in self.args.frames:
                yield frames, batch

    # -- models ---------------------------------------------------------------------------------
    def run_ours(self) -> None:
        t0 = time.perf_counter()
        model = init_random_(
            GameCraftTransformer(self.config, dtype=self.dtype, device="meta"), self.args.seed, self.device
        ).eval()
        build_s = time.perf_counter() - t0
        params = sum(p.numel() for p in model.parameters())
        weights_gb = self.memory_gb()
        backends = self.args.ours_backends
        with torch.inference_mode():
            for frames, batch in self.configs():
                for backend in backends if batch == 1 else backends[:1]:
                    entry = dict(
                        model="ours",
                        backend=backend,
                        frames=frames,
                        batch=batch,
                        params=params,
                        build_s=round(build_s, 1),
                        weights_gb=weights_gb,
                    )
                    if self.over_budget():
                        self.record(entry | {"error": "skipped: time budget"})
                        continue
                    try:
                        inp = self.inputs(frames, batch)
                        lh, lw = inp["x"].shape[-2:]
                        rope = rope_tables(frames, lh, lw, self.config, device=self.device)
                        t1 = time.perf_counter()
                        cam_tokens = model.camera_tokens(inp.pop("cam"), frames)
                        self.sync()
                        entry["camera_tokens_s"] = time.perf_counter() - t1
                        lengths = inp.pop("text_lengths")
                        entry.update(
                            self.measure(
                                lambda: model(
                                    PassInputs(
                                        **inp,
                                        camera_tokens=cam_tokens,
                                        rope=rope,
                                        text_lengths=lengths,
                                        attention_backend=backend,
                                    )
                                )
                            )
                        )
                    except Exception as err:  # OOM or an unusable kernel: record and go on
                        entry["error"] = f"{type(err).__name__}: {str(err)[:300]}"
                    finally:
                        inp = cam_tokens = rope = None
                        self.free()
                    self.record(entry)
        model = None  # free it before the next model is built
        self.free()

    def run_diffusers(self) -> None:
        try:
            from diffusers import HunyuanVideoTransformer3DModel
        except Exception as err:
            self.record(dict(model="diffusers", error=f"import failed: {type(err).__name__}: {err}"))
            return
        cfg = self.config
        if cfg.patch_size[1] != cfg.patch_size[2]:
            raise ValueError("diffusers' HunyuanVideo needs a square spatial patch")
        t0 = time.perf_counter()
        with torch.device("meta"):
            model = HunyuanVideoTransformer3DModel(
                in_channels=cfg.img_in_channels,
                out_channels=cfg.out_channels,
                num_attention_heads=cfg.num_heads,
                attention_head_dim=cfg.head_dim,
                num_layers=cfg.depth_double_blocks,
                num_single_layers=cfg.depth_single_blocks,
                num_refiner_layers=cfg.refiner_depth,
                mlp_ratio=cfg.mlp_width_ratio,
                patch_size=cfg.patch_size[1],
                patch_size_t=cfg.patch_size[0],
                qk_norm="rms_norm",
                guidance_embeds=False,
                text_embed_dim=cfg.text_states_dim,
                pooled_projection_dim=cfg.text_states_dim_2,
                rope_theta=cfg.rope_theta,
                rope_axes_dim=cfg.rope_dim_list,
            )
        model = init_random_(model.to(self.dtype), self.args.seed, self.device).eval()
        build_s = time.perf_counter() - t0
        params = sum(p.numel() for p in model.parameters())
        weights_gb = self.memory_gb()
        backend = self.args.diffusers_backend
        if self.device.type == "cpu" and backend == "_native_cudnn":
            backend = "native"
        model.set_attention_backend(backend)
        with torch.inference_mode():
            for frames, batch in self.configs():
                entry = dict(
                    model="diffusers",
                    frames=frames,
                    batch=batch,
                    params=params,
                    build_s=round(build_s, 1),
                    weights_gb=weights_gb,
                )
                if self.over_budget():
                    self.record(entry | {"backend": backend, "error": "skipped: time budget"})
                    continue
                inp = self.inputs(frames, batch)

                def call():
                    return model(
                        hidden_states=inp["x"],
                        timestep=inp["t"],  # noqa: E731
                        encoder_hidden_states=inp["text_states"],
                        encoder_attention_mask=inp["text_mask"],
                        pooled_projections=inp["text_states_2"],
                        return_dict=False,
                    )[0]

                try:
                    entry.update(self.measure(call))
                except torch.OutOfMemoryError as err:
                    entry["error"] = f"OutOfMemoryError: {str(err)[:200]}"
                except Exception as err:
                    if backend == "native":
                        entry["error"] = f"{type(err).__name__}: {str(err)[:300]}"
                    else:
                        entry["fallback_from"] = f"{backend}: {type(err).__name__}: {str(err)[:300]}"
                        backend = "native"
                        model.set_attention_backend(backend)
                        self.free()
                        try:
                            entry.update(self.measure(call))
                        except Exception as err2:
                            entry["error"] = f"{type(err2).__name__}: {str(err2)[:300]}"
                entry["backend"] = backend
                inp = None
                self.free()
                self.record(entry)
        model = None  # free it before the next model is built
        self.free()

    # -- output ---------------------------------------------------------------------------------
    def environment(self) -> dict:
        env = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": str(self.device),
            "dtype": str(self.dtype),
            "size": f"{self.args.height}x{self.args.width}",
            "text": f"{self.args.text_len} slots, valid {self.args.uncond_valid} (uncond) / {self.args.valid}",
            "command": " ".join(sys.argv),
            "config": self.config.to_dict(),
        }
        if self.device.type == "cuda":
            env["card"] = torch.cuda.get_device_name()
            env["cuda"] = torch.version.cuda
            env["cudnn"] = torch.backends.cudnn.version()
        try:
            import diffusers

            env["diffusers"] = diffusers.__version__
        except Exception:
            env["diffusers"] = None
        return env

    def table(self) -> str:
        lines = [
            "| model | attention | latent frames | batch | s / pass (median) | passes | peak GB | note |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in self.results:
            if "frames" not in r:
                lines.append(f"| {r['model']} | | | | | | | {r.get('error', '')} |")
                continue
            secs = f"{r['seconds_median']:.3f}" if "seconds_median" in r else "–"
            passes = ", ".join(f"{s:.3f}" for s in r.get("seconds", []))
            peak = f"{r['peak_gb']:.1f}" if r.get("peak_gb") is not None else "–"
            note = r.get("error") or ("" if r.get("finite_output", True) else "non-finite output (random weights)")
            if r.get("fallback_from"):
                note = (note + "; " if note else "") + f"fell back from {r['fallback_from'][:80]}"
            lines.append(
                f"| {r['model']} | {r.get('backend', '')} | {r['frames']} | {r['batch']} | {secs} | "
                f"{passes} | {peak} | {note} |"
            )
        return "\n".join(lines)

    def write(self) -> None:
        report = {"environment": self.environment(), "results": self.results}
        (self.args.out / "bench_transformer.json").write_text(json.dumps(report, indent=1))
        (self.args.out / "bench_transformer.md").write_text(self.table() + "\n")


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    bench = Bench(args)
    logger.info("device %s dtype %s", bench.device, bench.dtype)
    if not args.skip_ours:
        bench.run_ours()
    if not args.skip_diffusers:
        bench.run_diffusers()
    bench.write()
    print(json.dumps(bench.environment(), indent=1))
    print(bench.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
