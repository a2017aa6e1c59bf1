"""Predictor.setup() from the local safetensors cache (issue 7; target: <= 90 s on one H100/H200).

1. **Prepare** (timed, not measured): a weights directory in the official layout with random weights
   at full size and in the real containers: LLaVA-Llama-3-8B's language model (fp16, 4 shards + index,
   ``language_model.model.*``), CLIP-L's text model (fp32), the VAE ``.pt`` (fp32, ``vae.*``, production
   config), the production ``transformer_config.json`` and the distilled transformer's safetensors cache
   (bf16) beside a *sparse placeholder* ``.pt``. Tensors are views into one random pool per dtype,
   so RAM stays ~1 GB. The vision towers / LM head are not written: the loaders never read them.
2. **Measure** in fresh subprocesses (nothing pre-warmed; page cache dropped first with
   ``--drop-caches``): import, ``GameCraftEngine.load`` as ``serving.plan.plan_service`` configures it
   (split into VAE / text encoders / transformer), the warm-up ``measure_costs`` that ``setup()`` runs
   (it compiles the blocks on CUDA), peak GPU memory. ``--repeat-compile`` runs a second time with the
   inductor cache (``TORCHINDUCTOR_CACHE_DIR`` under ``--dir``) warm from the first run. ``--gpus N``
   adds what ``GAMECRAFT_GPUS=N`` adds: after rank 0's load, one worker per extra GPU starts and loads
   the same directory (``workers_s``), and the warm-up runs split over the GPUs.

    python benchmarks/bench_setup.py --dir /data/bench-setup --out $OUT --drop-caches --repeat-compile
    python benchmarks/bench_setup.py --dir /data/bench-setup --out $OUT --drop-caches --gpus 4
    python benchmarks/bench_setup.py --tiny --out /tmp/bs          # CPU smoke test, tiny sizes
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROCESS_START = time.perf_counter()  # the measured import time includes torch's

import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.setup_weights import CACHE_SUBDIR, log, prepare  # noqa: E402

GIB = 2**30


def drop_page_cache(weights_dir: Path) -> str:
    """Drop the page cache (needs root); otherwise evict the weight files with posix_fadvise."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return "drop_caches"
    except OSError as err:
        log(
            f"warning: cannot write /proc/sys/vm/drop_caches ({err}); evicting the weight files with "
            "posix_fadvise(DONTNEED) instead (libraries stay cached)"
        )
    for path in weights_dir.rglob("*"):
        if path.is_file() and "inductor-cache" not in path.parts:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    return "posix_fadvise"


# -- measure (in a fresh subprocess) -----------------------------------------------------------
class LoadLog(logging.Handler):
    """The engine's load timed from the log lines its loaders write as each one finishes (``loaded VAE``,
    ``loaded text encoders``, ``loaded <variant> transformer``; ``GameCraftEngine.load`` runs them in that
    order), and whether the transformer came from the safetensors cache (``loaded transformer weights from
    cache``): the benchmark reads what setup() logs and patches nothing."""

    FINISHED = (
        ("gamecraft.weights.vae", "loaded VAE", "vae"),
        ("gamecraft.weights.text", "loaded text encoders", "text_encoders"),
        ("gamecraft.engine.local", "loaded distilled transformer", "transformer"),
    )

    def __init__(self):
        super().__init__(logging.INFO)
        self.finished: dict[str, float] = {}
        self.cache_used = False

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        for logger, start, component in self.FINISHED:
            if record.name == logger and message.startswith(start):
                self.finished.setdefault(component, record.created)
        from_cache = message.startswith("loaded transformer weights from cache")
        if record.name == "gamecraft.weights.transformer" and from_cache:
            self.cache_used = True

    def components_s(self, began: float) -> dict[str, float]:
        """Seconds of each component, from ``began`` (``time.time()`` at the start of the load)."""
        seconds, previous = {}, began
        for _, _, component in self.FINISHED:
            seconds[component] = self.finished[component] - previous
            previous = self.finished[component]
        return seconds


def measure(args) -> dict:
    """What setup() does, timed: import, engine load (per component), warm-up, peak memory."""
    from gamecraft.engine import EngineConfig, GameCraftEngine
    from gamecraft.serving.budget import measure_costs
    from gamecraft.serving.config import ServingConfig
    from gamecraft.serving.plan import plan_service

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    row = {"import_s": time.perf_counter() - PROCESS_START}
    device, weights_dir, cache_dir = torch.device(args.device), Path(args.dir), Path(args.dir) / CACHE_SUBDIR
    cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    shapes = None
    if cuda:  # the configuration setup() plans for a weights directory
        plan = plan_service(
            ServingConfig.from_env(
                weights=str(weights_dir),
                preload=("distilled",),
                cache_dir=cache_dir,
                compile=not args.no_compile,
                gpus=args.gpus,
                compile_cache=False,
            )
        )
        config, shapes = plan.engine_config, plan.warm_shapes
    else:  # the CPU smoke mode of this script: the CPU configuration of tiny weights
        config = EngineConfig.for_cpu(weights_dir, preload=("distilled",), cache_dir=cache_dir)
    if not GameCraftEngine.loads_without_writing(config):  # it would read the sparse placeholder .pt
        raise RuntimeError("bench_setup: the safetensors cache would not be used; refusing to read the placeholder")
    devices = [f"cuda:{i}" for i in range(args.gpus)] if cuda else ["cpu"] * args.gpus
    workers = None
    if args.gpus > 1 and not args.late_workers:  # predict: the workers load while rank 0 does
        from gamecraft.parallel import start_workers_early

        workers = start_workers_early(config, args.gpus, devices)
    row["early_workers"] = workers is not None
    load_log = LoadLog()
    logging.getLogger("gamecraft").addHandler(load_log)
    began, begin = time.time(), time.perf_counter()
    engine = GameCraftEngine.load(config)
    sync()
    row["load_s"] = time.perf_counter() - begin
    logging.getLogger("gamecraft").removeHandler(load_log)
    row["components_s"] = load_log.components_s(began)
    row["components_s"]["other"] = row["load_s"] - sum(row["components_s"].values())  # e.g. pinning
    row["cache_used"] = load_log.cache_used
    if cuda:
        row["gpu_after_load_gib"] = torch.cuda.max_memory_allocated(device) / GIB
    row["workers_s"] = 0.0
    if args.gpus > 1:  # parallel.load_parallel_engine: one worker per extra GPU loads the same directory
        from gamecraft.parallel import engine_worker_spec, start_parallel_engine

        begin = time.perf_counter()  # early workers: only what is left of their loading after rank 0's
        engine = start_parallel_engine(engine, engine_worker_spec(engine.config), args.gpus, devices, runtime=workers)
        row["workers_s"] = time.perf_counter() - begin
    size = (64, 96) if args.tiny else (704, 1216)  # setup()'s size for real weights
    begin = time.perf_counter()
    costs = measure_costs(engine, *size, shapes=shapes)  # setup()'s warm-up (every shape it compiles)
    row["warmup_s"] = time.perf_counter() - begin
    row.update(
        compile=config.compile,
        size=list(size),
        costs=dict(
            first_pass_s=costs.first_pass_s,
            later_pass_s=costs.later_pass_s,
            decode_s=costs.decode_s,
            measured={str(k): v for k, v in costs.measured.items()},
        ),
        gpus=args.gpus,
        total_s=row["import_s"] + row["load_s"] + row["workers_s"] + row["warmup_s"],
        host_peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB,
        card=torch.cuda.get_device_name(device) if cuda else "cpu",
    )
    if cuda:
        row["gpu_peak_gib"] = torch.cuda.max_memory_allocated(device) / GIB
        row["gpu_peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / GIB
    if args.gpus > 1:
        engine.close()  # after the measurement: stopping the workers is not part of setup()
    return row


def run_child(args, run: int, inductor_dir: Path, result: Path) -> dict:
    """One measurement in a fresh interpreter (its logs stream through); returns its row."""
    flags = [
        flag
        for flag, on in (
            ("--tiny", args.tiny),
            ("--no-compile", args.no_compile),
            ("--late-workers", args.late_workers),
        )
        if on
    ]
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--dir",
        str(args.dir),
        "--device",
        args.device,
        "--gpus",
        str(args.gpus),
        "--result",
        str(result),
        *flags,
    ]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(inductor_dir)}
    begin = time.perf_counter()
    subprocess.run(command, env=env, check=True, timeout=args.timeout_s)
    row = json.loads(result.read_text())
    row.update(run=run, inductor_cache="cold" if run == 1 else "warm (from run 1)", wall_s=time.perf_counter() - begin)
    return rounded(row)


def rounded(value):
    """``value`` with every float rounded to 3 decimals (nested dicts too)."""
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return round(value, 3) if isinstance(value, float) else value


def read_rates(written: dict, seconds: dict) -> dict:
    """GB/s of each loader (bytes it reads / its seconds, conversions and copies to the device included)."""
    reads = {
        "vae": ["VAE"],
        "text_encoders": ["LLaVA language model", "CLIP text model"],
        "transformer": ["transformer cache"],
    }
    return {k: round(sum(written[w]["bytes"] for w in ws) / 1e9 / seconds[k], 2) for k, ws in reads.items()}


def driver_version() -> str | None:
    try:
        return (
            subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        return None


def summary(row: dict) -> str:
    parts = ", ".join(f"{k} {v:.1f}" for k, v in row["components_s"].items())
    gpu = f", peak GPU {row['gpu_peak_gib']:.1f} GiB" if "gpu_peak_gib" in row else ""
    workers = f" + workers for {row['gpus'] - 1} more GPU(s) {row['workers_s']:.1f} s" if row["gpus"] > 1 else ""
    return (
        f"run {row['run']} (inductor cache {row['inductor_cache']}, compile {row['compile']}): import "
        f"{row['import_s']:.1f} s + load {row['load_s']:.1f} s ({parts})"
        f"{workers} + warm-up {row['warmup_s']:.1f} s = "
        f"setup {row['total_s']:.1f} s{gpu}, host RSS {row['host_peak_rss_gib']:.1f} GiB, "
        f"cache used {row['cache_used']}"
    )


def environment(weights_dir: Path) -> dict:
    """Date, software, and where the weights live (filesystem type, free space, bytes on disk)."""
    import diffusers
    import transformers

    mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
    resolved = str(weights_dir.resolve())
    mount = max(
        (m for m in mounts if resolved.startswith(m[1].rstrip("/") + "/") or resolved == m[1]),
        key=lambda m: len(m[1]),
        default=["?", "?", "?"],
    )
    files = [p for p in weights_dir.rglob("*") if p.is_file()]
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "ram_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1),
        "disk": {
            "dir": resolved,
            "device": mount[0],
            "mount": mount[1],
            "fstype": mount[2],
            "free_gb": round(shutil.disk_usage(weights_dir).free / 1e9, 1),
            "allocated_gb": round(sum(p.stat().st_blocks * 512 for p in files) / 1e9, 2),
            "apparent_gb": round(sum(p.stat().st_size for p in files) / 1e9, 2),
        },
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dir", type=Path, help="weights directory to write/reuse (default: a temp dir under /tmp, deleted at the end)"
    )
    parser.add_argument("--out", type=Path, help="write OUT/bench_setup.json")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes on the CPU (tests the script)")
    parser.add_argument("--device", help="default: cuda, or cpu with --tiny")
    parser.add_argument("--drop-caches", action="store_true", help="drop the page cache before each run")
    parser.add_argument("--repeat-compile", action="store_true", help="a 2nd run with the inductor cache warm")
    parser.add_argument("--no-compile", action="store_true", help="eager transformer (GAMECRAFT_COMPILE=0)")
    parser.add_argument(
        "--gpus",
        type=int,
        default=1,
        help="setup() with GAMECRAFT_GPUS=N: one worker per extra GPU (gloo ranks with --tiny), loading as rank 0 does",
    )
    parser.add_argument(
        "--late-workers",
        action="store_true",
        help="start the workers after rank 0's load (the order before session 5) instead of at once",
    )
    parser.add_argument("--timeout-s", type=float, default=600, help="per measurement run")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.device = args.device or ("cpu" if args.tiny else "cuda")
    if args.child:
        args.result.write_text(json.dumps(measure(args)))
        return 0
    temporary = args.dir is None
    args.dir = Path(tempfile.mkdtemp(prefix="bench-setup-", dir="/tmp")) if temporary else args.dir
    args.dir.mkdir(parents=True, exist_ok=True)
    try:
        results = {
            "benchmark": "setup() from the local safetensors cache (issue 7)",
            "target_s": 90,
            "tiny": args.tiny,
            "device": args.device,
        }
        begin = time.perf_counter()
        results["prepare"] = prepare(args.dir, args.tiny)
        log(f"prepared in {time.perf_counter() - begin:.1f} s: {args.dir}")
        results["environment"] = env = environment(args.dir)
        if env["disk"]["fstype"] in ("tmpfs", "ramfs"):
            log(f"warning: {args.dir} is on {env['disk']['fstype']}: reads may come from RAM, not a disk")
        inductor_dir = args.dir / "inductor-cache"
        shutil.rmtree(inductor_dir, ignore_errors=True)  # run 1 compiles from scratch
        results["rows"] = []
        for run in (1, 2) if args.repeat_compile else (1,):
            begin = time.perf_counter()
            env[f"page_cache_run{run}"] = drop_page_cache(args.dir) if args.drop_caches else "not dropped"
            log(f"run {run}: page cache {env[f'page_cache_run{run}']} ({time.perf_counter() - begin:.1f} s)")
            log(f"run {run}: measuring setup() in a fresh process")
            row = run_child(args, run, inductor_dir, args.dir / f"run{run}.json")
            row["effective_read_gb_per_s"] = read_rates(results["prepare"]["components"], row["components_s"])
            results["rows"].append(row)
            print(summary(row), flush=True)
        env["card"], env["driver"] = results["rows"][0]["card"], driver_version()
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "bench_setup.json").write_text(json.dumps(results, indent=2))
            log(f"wrote {args.out / 'bench_setup.json'}")
    finally:
        if temporary:
            shutil.rmtree(args.dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
