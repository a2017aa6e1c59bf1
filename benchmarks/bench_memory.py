"""Peak GPU memory per phase with usable memory capped at a smaller card's (issue 20), on one big GPU.

For each ``--caps`` entry (``l40s``: 48 GB L40S, ``80gb``: H100 80GB, ``a100``: A100 80GB) the script caps
PyTorch's allocator with ``torch.cuda.set_per_process_memory_fraction`` at that card's memory less the
CUDA-context estimate of ``gamecraft.memory_plan`` (L40S 44.4 GiB, H100 79.1 GiB), asks
``gamecraft.hardware`` for the card's plan (attention kernel, fp8 twin, rows one at a time, text
offload, VAE tiles) and runs, each phase with ``torch.cuda.reset_peak_memory_stats`` before and
``max_memory_allocated`` after:

* ``build`` (first cap only): the full-size random engine (text encoders built in fp16 directly:
  ``random_engine`` builds LLaMA in float32 first, a 53.3 GiB peak that is a benchmark artifact);
* ``setup_warmup``: ``measure_costs`` as ``setup()`` runs it (prompt encode, 1-row passes at 10 and 18
  latent frames, two VAE decodes; compiles when the plan compiles);
* a request per preset: ``encode`` then one phase per chunk, from an image (chunk 1: 10 latent frames,
  i.e. a 1-chunk request; later chunks: 18). Step counts are cut (the peak of a step does not depend on
  how many run): distilled 2 steps (the second runs with the first one's StepCache features alive, as
  in every later step); full 3 steps flagged full/cached/full, so the reference's step cache is really
  used and its features are alive during a full pass, as at steps 12–38 of 50;
* go_fast (distilled): ``fp8_build`` (the twin made from the bf16 weights; where the plan keeps it
  beside them, first, so that every phase holds it as a server does after its first go_fast request)
  and a request (its first chunk: the twin's passes are smaller than the exact ones, never binding).

Plan features the engine lacks yet are emulated here: guidance rows one at a time (a wrapper runs the
2-row pass as two 1-row passes, one StepCache per row) and the fp8 twin replacing the bf16 block
linears (their GPU tensors are dropped while go_fast runs and refilled with random values before exact
passes; with random weights the values do not matter, only the memory). An out-of-memory error ends
its request and is recorded; the next phase runs. Out: ``bench_memory.json`` and ``bench_memory.md``.

    python benchmarks/bench_memory.py --out $OUT --caps l40s 80gb          # one H200, ≈ 6 min
    python benchmarks/bench_memory.py --out $OUT --caps l40s --non-hopper  # A100 choices: cuDNN SDPA, no fp8
    python benchmarks/bench_memory.py --tiny --out /tmp/mem                 # CPU smoke test of the script
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MIB = 1 << 20
CARDS = {  # cap name -> (the card whose plan is used, capability, memory as the driver reports it)
    "l40s": ("NVIDIA L40S", (8, 9), 46068 * MIB),
    "80gb": ("NVIDIA H100 80GB HBM3", (9, 0), 81559 * MIB),
    "a100": ("NVIDIA A100-SXM4-80GB", (8, 0), 81920 * MIB),
}


class RowByRow:
    """A transformer whose 2-row passes run as two 1-row passes (the plan's ``rows_one_at_a_time``), each
    row with its own StepCache kept on the sampler's cache object. Other attributes are the model's."""

    def __init__(self, model):
        self.model = model

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, x, t, states, mask, pooled, *, cache=None, **kwargs):
        import torch

        from gamecraft.model import StepCache

        rows = x.shape[0]
        if rows == 1:
            return self.model(x, t, states, mask, pooled, cache=cache, **kwargs)
        caches = [None] * rows
        if cache is not None:
            if not hasattr(cache, "row_caches"):
                cache.row_caches = [StepCache() for _ in range(rows)]
            caches = cache.row_caches

        def row(i: int, key: str, value):  # per-row tensors (camera tokens/latents) and the text lengths
            if key == "text_lengths" and value is not None:
                return value[i:i + 1]
            if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == rows:
                return value[i:i + 1]
            return value  # rope tables, flags, the attention kernel

        return torch.cat([self.model(x[i:i + 1], t[i:i + 1], states[i:i + 1], mask[i:i + 1], pooled[i:i + 1],
                                     cache=caches[i], **{k: row(i, k, v) for k, v in kwargs.items()})
                          for i in range(rows)])


class PlannedEngine:
    """Routes ``engine.transformer`` through the plan's emulated features (rows, fp8 twin replacing)."""

    def __init__(self, engine):
        self.engine = engine
        self.original = engine.transformer
        self.rows_one_at_a_time = False
        self.fp8_replace = False
        self.dropped: dict[int, tuple] = {}  # tensor id -> (tensor, shape, dtype)
        self.twins: dict[str, object] = {}
        engine.transformer = self.transformer

    def transformer(self, variant: str, fast: bool = False):
        """As ``engine.transformer``; with ``fp8_replace`` only one of the bf16 block linears and the twin's
        fp8 ones is on the device (the other is dropped before this one is refilled: no transient peak)."""
        model = self.original(variant)
        if fast:
            if variant not in self.twins:
                self._refill(model)  # the twin is quantized from the bf16 weights
                self.twins[variant] = self.original(variant, fast=True)
            if self.fp8_replace:
                self._drop(model)
            self._refill(self.twins[variant])
            model = self.twins[variant]
        else:
            if self.fp8_replace and variant in self.twins:
                self._drop(self.twins[variant])
            self._refill(model)
        return RowByRow(model) if self.rows_one_at_a_time else model

    def _selected(self, model):
        from gamecraft.model.fp8 import FP8Linear, is_fp8_layer

        for name, module in model.named_modules():
            if isinstance(module, FP8Linear):
                yield module.weight_fp8
                yield module.weight_scale
            elif is_fp8_layer(name, module):
                yield module.weight

    def _drop(self, model) -> None:
        import torch

        for tensor in self._selected(model):
            if tensor.numel():
                self.dropped[id(tensor)] = (tensor, tensor.shape, tensor.dtype)
                tensor.data = torch.empty(0, device=tensor.device, dtype=tensor.dtype)

    def _refill(self, model) -> None:
        import torch

        for tensor in self._selected(model):
            if id(tensor) in self.dropped:
                _, shape, dtype = self.dropped.pop(id(tensor))
                fresh = torch.empty(shape, device=tensor.device, dtype=torch.float32 if dtype.itemsize == 1 else dtype)
                tensor.data = fresh.normal_(0.0, 0.02).to(dtype)  # random weights: only the memory matters


def build_engine(device, attention, compile_, text_offload: bool, tiny: bool):
    """The full-size random engine (``tiny``: CPU-sized), text encoders allocated in their dtype at once."""
    import torch

    from gamecraft.engine import GameCraftEngine
    from gamecraft.random_weights import TINY_CLIP, TINY_LLM, random_engine, random_text_encoders

    if tiny:
        from gamecraft.model import TransformerConfig
        from gamecraft.tiny_weights import TINY_VAE

        base = random_engine(device="cpu", dtype=torch.float32, vae_dtype=torch.float32, text_dtype=torch.float32,
                             text_offload=False, transformer_config=TransformerConfig.tiny(), vae_config=TINY_VAE,
                             text=False, variants=("distilled",))
        sizes, text_dtype = dict(llm_config=TINY_LLM, clip_config=TINY_CLIP), torch.float32
    else:
        base = random_engine(device=device, text=False, variants=("distilled",))
        sizes, text_dtype = {}, torch.float16
    model = base.transformer("distilled")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(text_dtype)  # meta-built LLaMA/CLIP in fp16: no float32 copy on the GPU
    try:
        text = random_text_encoders(torch.device(device), text_dtype, 1, Path(base.config.weights_dir), **sizes)
    finally:
        torch.set_default_dtype(previous)
    config = dataclasses.replace(base.config, text_offload=text_offload and not tiny, attention_backend=attention.exact,
                                 fast_attention_backend=attention.go_fast, compile=compile_.blocks,
                                 compile_vae=compile_.vae_decoder)
    engine = GameCraftEngine(config, base.vae, text, base.transformer_config)
    for variant in ("distilled", "full"):
        engine.register_transformer(variant, model)  # one random transformer serves both presets
    return engine


class Recorder:
    """One row per phase: peak allocated/reserved GiB since the phase began, seconds, out-of-memory."""

    def __init__(self, cuda: bool, out: Path):
        self.cuda, self.rows, self.out = cuda, [], out

    @contextlib.contextmanager
    def phase(self, cap: str, name: str, modeled_gib: float | None = None):
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        row = dict(cap=cap, phase=name, modeled_gib=modeled_gib, oom=False)
        start = time.perf_counter()
        try:
            yield row
        except Exception as err:  # noqa: BLE001 - recorded; the next phase runs
            text = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
            row.update(oom=isinstance(err, torch.OutOfMemoryError) or "out of memory" in text.lower()
                       or "ALLOC_FAILED" in text, error=text)
        finally:
            if self.cuda:
                torch.cuda.synchronize()
                row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
                row["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
            row["seconds"] = round(time.perf_counter() - start, 1)
            self.rows.append(row)
            print(row, flush=True)
            # rows so far: a run stopped at its time limit still leaves its measurements
            (self.out / "bench_memory_rows.json").write_text(json.dumps(self.rows, indent=1))
            if "error" in row:
                gc.collect()
                if self.cuda:
                    torch.cuda.empty_cache()


def run_request(rec: Recorder, engine, cap: str, preset, chunks: int, size, peaks: dict) -> None:
    """One request from an image: the prompt encode, then ``chunks`` chunks (10 latent frames, then 18)."""
    from gamecraft.actions import single
    from gamecraft.camera import chunk_poses
    from gamecraft.sampling import LATENT_CHANNELS
    from gamecraft.session import WorldSession, chunk_noise

    h, w = size[0] // 8, size[1] // 8
    history = chunk_noise(99, 0, (1, LATENT_CHANNELS, 1, h, w))
    label = preset.name + (" go_fast" if preset.fp8 else "")
    with rec.phase(cap, f"{label}: encode", gib(peaks.get("encode"))) as row:
        session = WorldSession.start(engine, preset, "a village street", 1, *size, history=history,
                                     ref_latents=history)
    if "error" in row:
        return
    pass_peak = max(peaks.get("pass_2_rows" if preset.uses_cfg else "pass_1_row", 0), peaks.get("decode", 0))
    for index in range(chunks):
        with rec.phase(cap, f"{label}: chunk {index + 1}", gib(pass_peak)) as row:
            session.generate_chunk(chunk_poses(single("w", 0.3)), "w")
        if "error" in row:
            return


def apply_cap(cap_bytes: int) -> None:
    """Let PyTorch's allocator hold at most ``cap_bytes`` on GPU 0 (its context comes on top, as on the card)."""
    import torch

    torch.cuda.set_per_process_memory_fraction(cap_bytes / torch.cuda.get_device_properties(0).total_memory)


def gib(value) -> float | None:
    return None if value is None else round(value / 2**30, 2)


def run_cap(rec: Recorder, args, planned: PlannedEngine, cap: str, card: dict, size) -> None:
    import torch

    from gamecraft.budget import measure_costs
    from gamecraft.memory_plan import DEFAULT_COSTS
    from gamecraft.presets import resolve_preset

    engine, plan = planned.engine, card["plan"]
    peaks = dict(plan.peaks)
    if rec.cuda:
        gc.collect()
        torch.cuda.empty_cache()
        apply_cap(card["cap_bytes"])
    planned.rows_one_at_a_time = plan.rows_one_at_a_time
    planned.fp8_replace = plan.fp8_twin == "replace"
    with rec.phase(cap, "setup_warmup", gib(max(peaks[k] for k in ("encode", "pass_1_row", "decode")))):
        measure_costs(engine, *size)
    exact = [(resolve_preset("distilled", args.distilled_steps), args.chunks),
             (resolve_preset("full", args.full_steps), args.full_chunks)]
    fast = resolve_preset("distilled", args.distilled_steps, fp8=True)
    if plan.fp8_twin == "beside":  # resident from the first go_fast request on: every later phase holds it
        with rec.phase(cap, "fp8_build", gib(DEFAULT_COSTS.transformer + DEFAULT_COSTS.vae + DEFAULT_COSTS.fp8_twin)):
            planned.transformer("distilled", fast=True)
    for preset, chunks in exact:
        run_request(rec, engine, cap, preset, chunks, size, peaks)
    if args.go_fast_chunks and plan.fp8_twin == "replace":  # quantized while the bf16 weights are still there
        with rec.phase(cap, "fp8_build", gib(peaks["fp8_build"])):
            planned.transformer("distilled", fast=True)
    if args.go_fast_chunks and plan.fp8_twin in ("beside", "replace"):
        run_request(rec, engine, cap, fast, args.go_fast_chunks, size, peaks)


def full_flags(steps: int, enabled: bool) -> list[bool]:
    """Cut step-cache flags for the full preset: every second step after the first reuses the cache."""
    return [enabled and i % 2 == 1 for i in range(steps)]


def markdown(rows: list[dict], caps: dict) -> str:
    lines = ["| cap | phase | peak allocated GiB | peak reserved GiB | modeled GiB | seconds | error |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        error = ("**OOM** " if r["oom"] else "") + r.get("error", "")
        lines.append(f"| {r['cap']} | {r['phase']} | {r.get('peak_gib', '–')} | {r.get('peak_reserved_gib', '–')} | "
                     f"{'–' if r['modeled_gib'] is None else r['modeled_gib']} | {r['seconds']} | {error or 'no'} |")
    plans = []
    for cap, c in caps.items():
        note = (" Both transformers resident in the plan; measured with one (the random engine shares it), so "
                "add 23.9 GiB." if c["plan"].keep_both else "")
        plans.append(f"* **{cap}** ({c['card']}, cap {c['cap_bytes'] / 2**30:.2f} GiB): {c['summary']}.{note}")
    return "\n".join(["# bench_memory", "", *plans, "", *lines, ""])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--caps", nargs="+", default=["l40s", "80gb"], choices=sorted(CARDS),
                        help="cards to emulate, tightest first (setup is measured under the first)")
    parser.add_argument("--non-hopper", action="store_true",
                        help="the sm80 choices on every cap: cuDNN SDPA (sdpa-cudnn), no fp8 (go_fast runs exact)")
    parser.add_argument("--eager", action="store_true", help="no torch.compile (default: as the plan says)")
    parser.add_argument("--chunks", type=int, default=3, help="chunks of the distilled request")
    parser.add_argument("--full-chunks", type=int, default=2, help="chunks of the full-preset request")
    parser.add_argument("--go-fast-chunks", type=int, default=1, help="chunks of the go_fast request (0: none)")
    parser.add_argument("--distilled-steps", type=int, default=2)
    parser.add_argument("--full-steps", type=int, default=3)
    parser.add_argument("--expandable-segments", action="store_true",
                        help="PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True (less fragmentation)")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny models, no caps")
    args = parser.parse_args()
    if args.expandable_segments:  # read when CUDA initializes: before torch is imported
        os.environ["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
    import torch

    import gamecraft.session
    from gamecraft import hardware
    from gamecraft.memory_plan import DEFAULT_COSTS
    from gamecraft.model.attention import fa3_available

    args.out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available() and not args.tiny
    if not cuda and not args.tiny:
        parser.error("needs a CUDA GPU (or --tiny)")
    gamecraft.session.step_cache_flags = full_flags  # see the module docstring: cut steps, cache really used
    caps = {}
    for cap in args.caps:
        name, capability, memory = CARDS[cap]
        if args.non_hopper:
            capability = (8, 0)
        card = hardware.DeviceInfo(name, capability, memory)
        plan = hardware.plan_for(card)
        attention = hardware.choose_attention(card, "sdpa-cudnn" if args.non_hopper else "auto",
                                              fa3_installed=fa3_available())
        compile_ = hardware.compile_settings(card, enabled=not args.eager and cuda)
        caps[cap] = dict(card=name, capability=capability, cap_bytes=memory - DEFAULT_COSTS.cuda_context, plan=plan,
                         attention=attention, compile=compile_,
                         summary=hardware.summary_line(card, attention, plan, compile_))
        print(caps[cap]["summary"], flush=True)
    first = caps[args.caps[0]]
    if cuda:
        apply_cap(first["cap_bytes"])
    rec = Recorder(cuda, args.out)
    size = (704, 1216) if cuda else (32, 48)
    with rec.phase(args.caps[0], "build"):
        engine = build_engine("cuda" if cuda else "cpu", first["attention"], first["compile"],
                              first["plan"].text_offload, args.tiny)
    planned = PlannedEngine(engine)
    for cap in args.caps:
        if caps[cap]["attention"] != first["attention"]:
            engine.attention_backend = caps[cap]["attention"].exact
            engine.fast_attention_backend = caps[cap]["attention"].go_fast
        run_cap(rec, args, planned, cap, caps[cap], size)
    env = dict(date=datetime.date.today().isoformat(), torch=torch.__version__,
               card=torch.cuda.get_device_name() if cuda else "cpu (tiny)", size=size, args=sys.argv[1:],
               allocator=os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "default"),
               any_oom=any(r["oom"] for r in rec.rows), any_error=any("error" in r for r in rec.rows))
    plans = {cap: dict(card=c["card"], capability=c["capability"], cap_gib=round(c["cap_bytes"] / 2**30, 2),
                       attention=dataclasses.asdict(c["attention"]), compile=dataclasses.asdict(c["compile"]),
                       plan=dataclasses.asdict(c["plan"]), summary=c["summary"]) for cap, c in caps.items()}
    (args.out / "bench_memory.json").write_text(json.dumps(dict(environment=env, caps=plans, rows=rec.rows), indent=2))
    (args.out / "bench_memory.md").write_text(markdown(rec.rows, caps))
    print(json.dumps(env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
