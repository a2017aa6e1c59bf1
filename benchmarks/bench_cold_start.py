"""Cold start of a new instance (issue 27): READY and the first request, each phase in a fresh process.

A directory in the official layout at full size with random values (``benchmarks/bench_setup.py``'s
writers; the distilled transformer as a real 25 GB ``{"module": state_dict}`` ``.pt``). Before every
measured phase the page cache is dropped (``/proc/sys/vm/drop_caches``, else ``posix_fadvise(DONTNEED)`` on
every file of the directory) and the compiler caches (``TORCHINDUCTOR_CACHE_DIR``, ``TRITON_CACHE_DIR``)
start empty, as on a new machine. Phases (``--phases``, in this order; one JSON per phase in ``--out``):

``generate``  write the layout without the text encoders (the 64 GB disk cannot hold the ``.pt``, its
              safetensors copy and the text encoders at once)
``convert``   (a) the conversion ``setup()`` makes on a new machine: ``load_transformer`` from the ``.pt``
              alone (reads 25 GB, writes the safetensors cache, onto the GPU); then the ``.pt`` becomes a
              sparse stand-in of its size and the text encoders are written. Setup from the ``.pt`` alone
              = this + ``cold`` (stated as a sum, not measured in one process)
``probe``     the first prompt encode: pinning the text encoders (default allocator, and with
              ``pinned_use_cuda_host_register``), then two encodes
``cold``      (b) ``setup()`` with the safetensors cache and a cold compiler, then a first request
``prepare``   (c) ``python -m gamecraft.weights prepare DIR`` (compiles every pass shape, hashes, stores); it
              starts from the cold phase's compiler cache when there is one (its time is not a target), and
              stores every kernel it compiled or read
``prepared``  (d) ``setup()`` from the prepared directory (kernels loaded), then a first request
``fetch``     (e) ``GAMECRAFT_WEIGHTS_URL``'s fetch from a local HTTP server of ``--fetch-gb`` of the files

The first request: distilled, 2 chunks (``["w", "d"]``) from the start image: first chunk (10 latent
frames) and a later one (18), against the warm-up's pass times.

GPU (one H100 80GB, 64 GiB disk): the chain took 17 minutes on 2026-12-07 (BENCHMARKS.md, "Cold start"); run
it in the background where one command may run 10 minutes, or split it (the directory is kept between runs):

    python benchmarks/bench_cold_start.py --dir weights/cold27 --out $OUT/cold \
        --phases generate,convert,cold,prepare,prepared,fetch --fetch-gb 6

    python benchmarks/bench_cold_start.py --tiny --dir /tmp/gc-cold-tiny --out /tmp/gc-cold-out   # CPU test
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

PROCESS_START = time.perf_counter()

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

PHASES = ("generate", "convert", "probe", "cold", "prepare", "prepared", "fetch")
IMAGE = REPO_ROOT / "assets" / "start.png"
GB = 1e9


def log(message: str) -> None:
    print(f"[bench_cold_start {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- measured phases (each in a fresh process) --------------------------------------------------
def serving_config(weights_dir: Path, tiny: bool):
    from gamecraft.serving.config import ServingConfig

    if tiny:  # the CPU runs tiny directories as "tiny" weights (real ones need a GPU)
        return ServingConfig(weights="tiny", tiny_dir=weights_dir, tiny_size=(32, 48), download=False)
    return ServingConfig.from_env(weights=str(weights_dir), download=False)


def setup_and_first_request(weights_dir: Path, tiny: bool, out: Path, go_fast_too: bool) -> dict:
    """``setup()``'s work (``build_service``), then a first request of 2 chunks (and, with ``go_fast_too``, the
    same request with go_fast)."""
    import torch

    from gamecraft.serving.build import build_service

    imported = time.perf_counter() - PROCESS_START
    served = build_service(serving_config(weights_dir, tiny))
    ready = time.perf_counter() - PROCESS_START
    encodes = EncodeTimes()  # the request's prompt encodes, as the engine logs them
    logging.getLogger("gamecraft.engine.local").addHandler(encodes)
    compiled_before = _compiled_frames()
    exact = _request(served, out / "request", go_fast=False)
    first_encodes = list(encodes.seconds)
    # the same request with go_fast, as this machine runs it (fp8 linears; 8-bit attention only where installed)
    go_fast_request = None
    if go_fast_too:
        go_fast_request = _request(served, out / "request-go-fast", go_fast=served.plan.go_fast_note is None)
    warm = served.warm_up
    row = {
        "import_s": round(imported, 1),
        "ready_s": round(ready, 1),
        "first_request_chunks_at_s": exact["chunks_at_s"],
        "first_request_chunk_s": exact["chunk_s"],
        "go_fast_request": go_fast_request,
        "go_fast_attention": served.engine.go_fast_attention_backend,
        "frames_compiled_by_requests": _compiled_frames() - compiled_before,
        "warm_up_s": round(warm.seconds, 1) if warm else None,
        "warm_up_pass_s": {str(k): round(v, 3) for k, v in warm.pass_seconds.items()} if warm else None,
        "warm_up_decode_s": round(warm.decode_seconds, 2) if warm else None,
        "warm_up_encode_s": round(warm.encode_seconds, 2) if warm else None,
        "first_request_encode_s": first_encodes,
        "gpu_peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if torch.cuda.is_available() else None,
    }
    served.close()
    return row


def _request(served, out: Path, go_fast: bool) -> dict:
    """One request of 2 chunks (``["w", "d"]`` from the start image): when each chunk's event came, and the
    chunk times the generation reports."""
    from gamecraft.pipeline.actions import parse_actions
    from gamecraft.pipeline.presets import resolve_preset
    from gamecraft.serving.events import ChunkDone, Finished
    from gamecraft.serving.generate import GenerationRequest

    request = GenerationRequest(
        prompt="a medieval village street",
        preset=resolve_preset("distilled", None, go_fast=go_fast),
        segments=parse_actions('["w", "d"]', "[0.3, 0.3]"),
        image=IMAGE,
        seed=1,
        size=served.plan.size,
        return_state=False,
    )
    begin = time.perf_counter()
    chunk_at, finished = [], None
    for event in served.generate(request, out):
        if isinstance(event, ChunkDone):
            chunk_at.append(round(time.perf_counter() - begin, 2))
        elif isinstance(event, Finished):
            finished = event
    return {
        "go_fast": go_fast,
        "chunks_at_s": chunk_at,
        "chunk_s": [round(s, 2) for s in finished.chunk_seconds] if finished else None,
    }


def _compiled_frames() -> int:
    """Frames dynamo has compiled in this process (a request that compiles raises it)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


class EncodeTimes(logging.Handler):
    """Seconds of each ``encoded prompt … in 0.31s`` line (``GameCraftEngine.encode_text``)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.seconds: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = re.match(r"encoded prompt .* in ([0-9.]+)s$", record.getMessage())
        if match:
            self.seconds.append(float(match.group(1)))


def prepare_phase(weights_dir: Path, tiny: bool) -> dict:
    from gamecraft.serving.plan import plan_service
    from gamecraft.serving.prepare import prepare_directory

    config = serving_config(weights_dir, tiny)
    plan = plan_service(config, device=None) if tiny else None
    begin = time.perf_counter()
    manifest = prepare_directory(config, ["distilled"], plan=plan)
    return {
        "prepare_s": round(time.perf_counter() - begin, 1),
        "files": len(manifest.files),
        "bytes": sum(e.size for e in manifest.files.values()),
        "kernels_bytes": manifest.files[manifest.kernels].size if manifest.kernels else 0,
        "machine": dict(manifest.machine),
    }


def probe(weights_dir: Path, tiny: bool) -> dict:
    """Where the 19 s first prompt encode goes: pinning 16 GB of text encoders, then encodes."""
    import torch

    from gamecraft.weights import DEFAULT_LAYOUT, load_text_encoders
    from gamecraft.weights.offload import PinnedOffload

    device = "cuda" if torch.cuda.is_available() else "cpu"
    begin = time.perf_counter()
    text = load_text_encoders(weights_dir, DEFAULT_LAYOUT, "cpu", torch.float16)
    loaded = time.perf_counter() - begin
    torch.zeros(1, device=device)  # CUDA context
    begin = time.perf_counter()
    offloads = [PinnedOffload(text.llm, torch.device(device)), PinnedOffload(text.clip, torch.device(device))]
    pinned = time.perf_counter() - begin
    encodes = []
    for _ in range(2):
        begin = time.perf_counter()
        with offloads[0].on_device(), offloads[1].on_device():
            text.encode(["a medieval village street"])
        if device == "cuda":
            torch.cuda.synchronize()
        encodes.append(round(time.perf_counter() - begin, 2))
    return {
        "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""),
        "load_s": round(loaded, 1),
        "pin_s": round(pinned, 1),
        "pinned_gb": round(sum(o.nbytes for o in offloads) / GB, 1),
        "encode_s": encodes,
    }


def fetch_phase(weights_dir: Path, target: Path, limit_gb: float) -> dict:
    """Serve ``weights_dir`` on 127.0.0.1 and fetch files of its manifest (up to ``limit_gb``) into
    ``target`` as ``GAMECRAFT_WEIGHTS_URL`` would (disk: the copy must fit beside the original)."""
    from gamecraft.testing.http_range import serve_directory
    from gamecraft.weights.fetch import fetch_directory
    from gamecraft.weights.manifest import read_manifest

    manifest = read_manifest(weights_dir)
    limit_gb = min(limit_gb, shutil.disk_usage(weights_dir).free / GB - 4)  # leave the disk 4 GB
    chosen, total = [], 0
    for rel, entry in sorted(manifest.files.items(), key=lambda kv: -kv[1].size):
        if total + entry.size <= limit_gb * GB:
            chosen.append(rel)
            total += entry.size
    with serve_directory(weights_dir) as url:
        begin = time.perf_counter()
        fetch_directory(url, target, only=chosen)
        seconds = time.perf_counter() - begin
        hub = _hub_single_stream(url, chosen[0], target) if chosen else None
    shutil.rmtree(target)  # verified against the manifest while fetched; the disk is needed
    rate = round(total / GB / seconds, 2)
    row = {"fetched_bytes": total, "files": len(chosen), "seconds": round(seconds, 1), "gb_per_s": rate}
    return {**row, "huggingface_hub_single_stream": hub}


def _hub_single_stream(url: str, rel: str, target: Path) -> dict | None:
    """The same file through ``huggingface_hub``'s downloader (``http_get``: one stream, as the gated Hub
    fallback fetches each file without ``hf_transfer``) from the same server: its rate here is an upper bound
    of what it reaches over the network."""
    try:
        from huggingface_hub.file_download import http_get
    except ImportError:
        return None
    path = target / (rel + ".hub")
    begin = time.perf_counter()
    with open(path, "wb") as file:
        http_get(url.rstrip("/") + "/" + rel, file)
    seconds = time.perf_counter() - begin
    size = path.stat().st_size
    path.unlink()
    return {"file": rel, "bytes": size, "seconds": round(seconds, 1), "gb_per_s": round(size / GB / seconds, 2)}


# -- orchestration ------------------------------------------------------------------------------
def drop_page_cache(weights_dir: Path) -> str:
    from benchmarks.bench_setup import drop_page_cache as drop

    return drop(weights_dir)


def child(args) -> int:
    from benchmarks.cold_start_dir import convert, generate

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    phase, weights_dir = args.child, args.dir
    if phase == "generate":
        row = generate(weights_dir, args.tiny, args.free_gb)
    elif phase == "convert":
        row = convert(weights_dir, args.tiny)
    elif phase == "probe":
        row = probe(weights_dir, args.tiny)
    elif phase in ("cold", "prepared"):
        row = setup_and_first_request(
            weights_dir, args.tiny, args.result.parent / phase, go_fast_too=phase == "prepared"
        )
    elif phase == "prepare":
        row = prepare_phase(weights_dir, args.tiny)
    else:
        row = fetch_phase(weights_dir, args.dir.parent / (args.dir.name + "-fetched"), args.fetch_gb)
    args.result.write_text(json.dumps(row, indent=2))
    return 0


def run_phase(args, phase: str, extra_env: dict | None = None, tag: str | None = None) -> dict:
    tag = tag or phase
    # a new machine's empty compiler caches, beside the weights (kept between the lead's commands); prepare
    # reuses the cold phase's (its compile time is not a target; that keeps the third command short)
    root = args.dir.parent / (args.dir.name + "-compiler-caches")
    caches = root / "cold" if phase == "prepare" and (root / "cold").is_dir() else root / tag
    if caches != root / "cold" or phase == "cold":
        shutil.rmtree(caches, ignore_errors=True)
    caches.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "TORCHINDUCTOR_CACHE_DIR": str(caches / "inductor"),
        "TRITON_CACHE_DIR": str(caches / "triton"),
        **(extra_env or {}),
    }
    # (--tiny runs on shared CPU machines: their page cache is left alone)
    dropped = drop_page_cache(args.dir) if phase != "generate" and not args.tiny else None
    result = args.out / f"{tag}.json"
    result.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", phase, "--dir", str(args.dir)]
    command += ["--result", str(result), "--fetch-gb", str(args.fetch_gb)] + (["--tiny"] if args.tiny else [])
    command += ["--free-gb", str(args.free_gb)] if args.free_gb is not None else []
    log(f"{tag}: {' '.join(command[2:])}")
    begin = time.perf_counter()
    with open(args.out / f"{tag}.log", "w") as logfile:
        try:
            done = subprocess.run(command, env=env, stdout=logfile, stderr=subprocess.STDOUT, timeout=args.timeout_s)
            code = done.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    wall = time.perf_counter() - begin
    row = json.loads(result.read_text()) if result.is_file() else {}
    row.update(phase=phase, tag=tag, wall_s=round(wall, 1), returncode=code, page_cache=dropped)
    row["compiler_cache"] = "the cold phase's (reused)" if caches.name != tag else "empty at start"
    (args.out / f"{tag}.json").write_text(json.dumps(row, indent=2))
    log(f"{tag}: {json.dumps(row)}")
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="the weights directory (written by generate)")
    parser.add_argument("--out", type=Path, help="JSON and logs per phase")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated, of {', '.join(PHASES)}")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes on the CPU (tests the script)")
    parser.add_argument("--fetch-gb", type=float, default=10.0, help="how much the fetch phase copies")
    parser.add_argument("--timeout-s", type=float, default=540, help="per phase (a command may run 10 min)")
    parser.add_argument("--free-gb", type=float, help=argparse.SUPPRESS)  # test hook: pretend this much disk
    parser.add_argument("--child", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = [p for p in phases if p not in PHASES]
    if unknown or args.out is None:
        parser.error(f"unknown phases {unknown}" if unknown else "--out is required")
    args.dir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    failed = False
    for phase in phases:
        if phase == "probe":
            rows = [run_phase(args, phase, tag="probe-default")]
            conf = "pinned_use_cuda_host_register:True,pinned_num_register_threads:8"
            rows.append(run_phase(args, phase, {"PYTORCH_CUDA_ALLOC_CONF": conf}, tag="probe-host-register"))
        else:
            rows = [run_phase(args, phase)]
        failed = failed or any(row["returncode"] != 0 for row in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
