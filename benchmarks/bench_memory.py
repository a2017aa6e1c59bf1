"""Peak GPU memory per phase with usable memory capped at a smaller card's (issue 20), on one big GPU.

For each ``--caps`` entry (``l40s``: 48 GB L40S, ``80gb``: H100 80GB, ``a100``: A100 80GB) the script caps
PyTorch's allocator with ``torch.cuda.set_per_process_memory_fraction`` at that card's memory less the
CUDA-context estimate of ``gamecraft.serving.memory_plan`` (L40S 44.4 GiB, H100 79.1 GiB) and builds the engine
exactly as ``setup()`` would on that card: ``build_service`` with ``GAMECRAFT_GPU`` set to the card, so the
planner picks its attention kernel, fp8-twin placement, guidance rows one at a time, text offload and
compilation (full-size random weights; the kernels run on the real GPU). Each phase is timed with
``torch.cuda.reset_peak_memory_stats`` before and ``max_memory_allocated`` after:

* ``setup (build + warm-up)``: the engine and its warm-up on every pass shape of both presets (and go_fast's),
  then one row per warm-up shape with its own peak;
* a request per preset: ``encode`` then one phase per chunk, from an image (chunk 1: 10 latent frames;
  later chunks: 18). Step counts are cut (the peak of a step does not depend on how many run): distilled 2
  steps; full 3 steps flagged full/cached/full, so the reference's step cache is really used and its features
  are alive during a full pass, as at steps 12–38 of 50;
* go_fast (distilled) where the card runs it: the fp8 twin is built on its first pass, placed as planned.

An out-of-memory error ends its request and is recorded; the next phase runs. Out: ``bench_memory.json``
and ``bench_memory.md`` (measured next to the plan's modeled GiB).

    python benchmarks/bench_memory.py --out $OUT --caps l40s 80gb          # one H200
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
            row.update(
                oom=isinstance(err, torch.OutOfMemoryError)
                or "out of memory" in text.lower()
                or "ALLOC_FAILED" in text,
                error=text,
            )
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
    from gamecraft.pipeline.actions import single
    from gamecraft.pipeline.camera import chunk_poses
    from gamecraft.pipeline.session import WorldSession, chunk_noise
    from gamecraft.specs.geometry import LATENT_CHANNELS

    h, w = size[0] // 8, size[1] // 8
    history = chunk_noise(99, 0, (1, LATENT_CHANNELS, 1, h, w))
    label = preset.name + (" go_fast" if preset.go_fast else "")
    with rec.phase(cap, f"{label}: encode", gib(peaks.get("encode"))) as row:
        session = WorldSession.start(engine, preset, "a village street", 1, *size, history=history)
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


def run_cap(rec: Recorder, args, cap: str, card: dict) -> None:
    """Build the engine as ``setup()`` does for this card (``GAMECRAFT_GPU`` override + the memory cap), then
    the requests."""
    import torch

    from gamecraft.pipeline.presets import resolve_preset
    from gamecraft.serving.build import build_service

    if rec.cuda:
        gc.collect()
        torch.cuda.empty_cache()
        apply_cap(card["cap_bytes"])
    with rec.phase(cap, "setup (build + warm-up)", gib(max(card["peaks"].values(), default=None))) as row:
        served = build_service(card["config"])
    if "error" in row:
        return
    plan = served.plan
    peaks = dict(plan.memory.peaks) if plan.memory is not None else {}
    try:
        for shape, peak in served.warm_up.peak_bytes.items():
            timed = served.warm_up.pass_seconds.get(shape)  # shapes of presets not preloaded run once, untimed
            rec.rows.append(
                dict(
                    cap=cap,
                    phase=f"warm-up pass: {shape}",
                    peak_gib=gib(peak),
                    oom=False,
                    seconds=round(timed, 3) if timed is not None else None,
                    modeled_gib=None,
                )
            )
        requests = [
            (resolve_preset("distilled", args.distilled_steps), args.chunks),
            (resolve_preset("full", args.full_steps), args.full_chunks),
        ]
        if args.go_fast_chunks and card["go_fast"]:
            requests.append((resolve_preset("distilled", args.distilled_steps, go_fast=True), args.go_fast_chunks))
        for preset, chunks in requests:
            if chunks:
                run_request(rec, served.engine, cap, preset, chunks, plan.size, peaks)
    finally:
        served.close()
        del served
        gc.collect()
        if rec.cuda:
            torch.cuda.empty_cache()


def full_flags(steps: int, enabled: bool) -> list[bool]:
    """Cut step-cache flags for the full preset: every second step after the first reuses the cache."""
    return [enabled and i % 2 == 1 for i in range(steps)]


def markdown(rows: list[dict], caps: dict) -> str:
    lines = [
        "| cap | phase | peak allocated GiB | peak reserved GiB | modeled GiB | seconds | error |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        error = ("**OOM** " if r["oom"] else "") + r.get("error", "")
        lines.append(
            f"| {r['cap']} | {r['phase']} | {r.get('peak_gib', '–')} | {r.get('peak_reserved_gib', '–')} | "
            f"{'–' if r['modeled_gib'] is None else r['modeled_gib']} | {r['seconds']} | {error or 'no'} |"
        )
    plans = []
    for cap, c in caps.items():
        note = (
            " Both transformers resident in the plan; measured with one (the random engine shares it), so add 23.9 GiB."
            if c["plan"].keep_both
            else ""
        )
        plans.append(f"* **{cap}** ({c['card']}, cap {c['cap_bytes'] / 2**30:.2f} GiB): {c['summary']}.{note}")
    return "\n".join(["# bench_memory", "", *plans, "", *lines, ""])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--caps",
        nargs="+",
        default=["l40s", "80gb"],
        choices=sorted(CARDS),
        help="cards to emulate, tightest first (setup is measured under the first)",
    )
    parser.add_argument(
        "--non-hopper",
        action="store_true",
        help="the sm80 choices on every cap: cuDNN SDPA (sdpa-cudnn), no fp8 (go_fast runs exact)",
    )
    parser.add_argument("--eager", action="store_true", help="no torch.compile (default: as the plan says)")
    parser.add_argument("--chunks", type=int, default=3, help="chunks of the distilled request")
    parser.add_argument("--full-chunks", type=int, default=2, help="chunks of the full-preset request")
    parser.add_argument(
        "--host-gib", type=float, help="plan for a host with this much memory (default: this machine's)"
    )
    parser.add_argument("--go-fast-chunks", type=int, default=1, help="chunks of the go_fast request (0: none)")
    parser.add_argument("--distilled-steps", type=int, default=2)
    parser.add_argument("--full-steps", type=int, default=3)
    parser.add_argument(
        "--expandable-segments",
        action="store_true",
        help="PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True (less fragmentation)",
    )
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny models, no caps")
    args = parser.parse_args()
    if args.expandable_segments:  # read when CUDA initializes: before torch is imported
        os.environ["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
    import torch

    import gamecraft.pipeline.session
    from gamecraft.serving.config import ServingConfig
    from gamecraft.serving.devices import DeviceInfo, probe_devices
    from gamecraft.serving.memory_plan import DEFAULT_COSTS
    from gamecraft.serving.plan import PROBE, plan_service

    args.out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available() and not args.tiny
    if not cuda and not args.tiny:
        parser.error("needs a CUDA GPU (or --tiny)")
    gamecraft.pipeline.session.step_cache_flags = full_flags  # see the module docstring: cut steps, cache used
    real = probe_devices() if cuda else None
    caps = {}
    for cap in args.caps:
        name, capability, memory = CARDS[cap]
        if args.non_hopper:
            capability = (8, 0)
        card = DeviceInfo(name, capability, memory)
        override = f"{name}:{capability[0]}.{capability[1]}:{memory / 2**30:.4f}"
        config = ServingConfig.from_env(
            weights="tiny" if args.tiny else "random",
            gpus=1,
            preload=("distilled",),
            tiny_size=(32, 48),
            compile=not args.eager and cuda,
            gpu_override=override if cuda else None,
            attention="sdpa-cudnn" if args.non_hopper else "auto",
        )
        # the card's plan as setup() would make it there (reported; on the CPU the engine runs tiny models)
        planned = plan_service(
            config,
            device=card if not cuda else DeviceInfo(name, capability, memory, real.count, real.nvlink),
            host_memory_bytes=int(args.host_gib * 2**30) if args.host_gib else PROBE,
        )
        caps[cap] = dict(
            card=name,
            capability=capability,
            cap_bytes=memory - DEFAULT_COSTS.cuda_context,
            config=config,
            plan=planned.memory,
            attention=planned.attention,
            compile=planned.compile,
            peaks=dict(planned.memory.peaks),
            summary=planned.summary,
            go_fast=planned.go_fast_note is None and planned.memory.fp8_twin in ("beside", "replace"),
        )
        print(caps[cap]["summary"], flush=True)
    rec = Recorder(cuda, args.out)
    for cap in args.caps:
        run_cap(rec, args, cap, caps[cap])
    env = dict(
        date=datetime.date.today().isoformat(),
        torch=torch.__version__,
        card=torch.cuda.get_device_name() if cuda else "cpu (tiny)",
        args=sys.argv[1:],
        allocator=os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "default"),
        any_oom=any(r["oom"] for r in rec.rows),
        any_error=any("error" in r for r in rec.rows),
    )
    plans = {
        cap: dict(
            card=c["card"],
            capability=c["capability"],
            cap_gib=round(c["cap_bytes"] / 2**30, 2),
            attention=dataclasses.asdict(c["attention"]),
            compile=dataclasses.asdict(c["compile"]),
            plan=dataclasses.asdict(c["plan"]),
            summary=c["summary"],
        )
        for cap, c in caps.items()
    }
    env["size"] = [32, 48] if args.tiny else [704, 1216]
    (args.out / "bench_memory.json").write_text(json.dumps(dict(environment=env, caps=plans, rows=rec.rows), indent=2))
    (args.out / "bench_memory.md").write_text(markdown(rec.rows, caps))
    print(json.dumps(env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
