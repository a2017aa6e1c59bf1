"""Ulysses q/k/v exchange on N GPUs: NCCL all-to-all against copy-engine pulls from peer memory, each
alone and each running beside an attention call, then beside a GEMM (does the exchange take SMs from
the computation it would hide behind?).

This decides whether the exchange can be hidden behind attention (``head_chunks`` > 1): the NCCL
all-to-all runs on SMs, so overlapping it measured no gain in sessions 3 and 4; a pull through
peer-mapped memory (``torch.distributed._symmetric_memory``) is a DMA copy and might not compete.

Sizes follow the 704×1216 18-frame pass: ``--tokens`` image tokens, ``--heads`` heads of ``--dim``;
one exchange moves one head group's q, k and v (``--groups`` groups per rank), bf16.

    python benchmarks/bench_exchange.py --out $OUT --gpus 4 2
    python benchmarks/bench_exchange.py --tiny --gpus 2 --out /tmp/ex   # CPU (gloo) smoke test: no pulls,
                                                                        # nothing run side by side
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mean_ms(fn, repeats: int, cuda: bool = True) -> float:
    """Mean milliseconds of ``fn`` after one warm-up call: CUDA events on the current stream, or the
    wall clock on the CPU."""
    fn()
    if not cuda:
        dist.barrier()
        begin = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - begin) * 1e3 / repeats
    torch.cuda.synchronize()
    dist.barrier()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    stop.record()
    torch.cuda.synchronize()
    return start.elapsed_time(stop) / repeats


def worker(rank: int, world: int, port: int, args, queue) -> None:
    os.environ.update(dict(item.split("=", 1) for item in args.env.split(",") if item))
    os.environ.update(NCCL_NVLS_ENABLE="0", TORCH_SYMM_MEM_DISABLE_MULTICAST="1", NVSHMEM_DISABLE_NVLS="1")
    if args.tiny:
        device, backend, extra = torch.device("cpu"), "gloo", {}
    else:
        device, backend = torch.device("cuda", rank), "nccl"
        torch.cuda.set_device(device)
        extra = dict(device_id=device)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, **extra)
    row: dict = dict(gpus=world, backend=backend, tokens=args.tokens, groups=args.groups, env=args.env)
    n = args.tokens // world
    width = args.heads // world // args.groups  # heads per exchanged group
    piece = n * 3 * width * args.dim  # elements each rank sends to each rank
    send = torch.randn(world * piece, device=device, dtype=torch.bfloat16)
    recv = torch.empty_like(send)
    row["mb_per_exchange"] = round(send.numel() * 2 / 1e6, 1)

    row["nccl_ms"] = mean_ms(lambda: dist.all_to_all_single(recv, send), args.repeats, cuda=not args.tiny)

    pull = None
    try:
        if args.tiny:
            raise RuntimeError("no peer memory on the CPU")
        import torch.distributed._symmetric_memory as symm_mem

        buffer = symm_mem.empty(world * piece, dtype=torch.bfloat16, device=device)
        buffer.copy_(send)
        handle = symm_mem.rendezvous(buffer, dist.group.WORLD)
        peers = [handle.get_buffer(src, (world * piece,), torch.bfloat16) for src in range(world)]
        streams = [torch.cuda.Stream() for _ in range(world)]

        def pull_exchange() -> None:
            handle.barrier(channel=0)  # every rank's buffer is filled
            main = torch.cuda.current_stream()
            for src in range(world):  # one stream per source, so several copy engines can work
                streams[src].wait_stream(main)
                with torch.cuda.stream(streams[src]):
                    recv[src * piece : (src + 1) * piece].copy_(peers[src][rank * piece : (rank + 1) * piece])
                main.wait_stream(streams[src])
            handle.barrier(channel=1)  # nobody overwrites a buffer that is still being read

        pull = pull_exchange
        row["pull_ms"] = mean_ms(pull, args.repeats)
        torch.cuda.synchronize()
        dist.barrier()
        check = torch.empty_like(recv)
        dist.all_to_all_single(check, send)
        pull()
        torch.cuda.synchronize()
        row["pull_equals_nccl"] = bool(torch.equal(check, recv))
    except Exception as error:  # noqa: BLE001 - recorded: the point is whether it works here
        row["pull_error"] = f"{type(error).__name__}: {error}"[:300]
        pull = None

    # attention over one head group on the whole sequence, as each rank runs it
    q, k, v = (torch.randn(1, width, args.tokens, args.dim, device=device, dtype=torch.bfloat16) for _ in range(3))
    attend = lambda: F.scaled_dot_product_attention(q, k, v)  # noqa: E731
    row["attention_ms"] = mean_ms(attend, max(2, args.repeats // 4), cuda=not args.tiny)
    if args.tiny:  # no streams to run the two side by side
        return finish(row, send, world, rank, queue)
    side = torch.cuda.Stream()

    def beside(compute, exchange):
        def both() -> None:
            main = torch.cuda.current_stream()
            side.wait_stream(main)
            with torch.cuda.stream(side):
                exchange()
            compute()
            main.wait_stream(side)

        return both

    nccl = lambda: dist.all_to_all_single(recv, send)  # noqa: E731
    row["attention_with_nccl_ms"] = mean_ms(beside(attend, nccl), max(2, args.repeats // 4))
    if pull is not None:
        row["attention_with_pull_ms"] = mean_ms(beside(attend, pull), max(2, args.repeats // 4))
    # the same, beside a GEMM instead: a single block's MLP projection on this rank's tokens
    # (hidden → 4·hidden), the work an exchange could hide behind if the block's GEMMs were split
    hidden = args.heads * args.dim
    tokens = torch.randn(n, hidden, device=device, dtype=torch.bfloat16)
    weight = torch.randn(4 * hidden, hidden, device=device, dtype=torch.bfloat16) / hidden**0.5
    gemm = lambda: F.linear(tokens, weight)  # noqa: E731
    row["gemm_ms"] = mean_ms(gemm, args.repeats)
    row["gemm_with_nccl_ms"] = mean_ms(beside(gemm, nccl), args.repeats)
    if pull is not None:
        row["gemm_with_pull_ms"] = mean_ms(beside(gemm, pull), args.repeats)
    finish(row, send, world, rank, queue)


def finish(row: dict, send: torch.Tensor, world: int, rank: int, queue) -> None:
    """Round the row, add the rates, hand it over from rank 0, leave the group."""
    for key in [k for k in row if k.endswith("_ms")]:
        row[key] = round(row[key], 3)
    gb = send.numel() * 2 * (world - 1) / world / 1e9
    row["nccl_gb_per_s"] = round(gb / row["nccl_ms"] * 1e3, 1)
    if "pull_ms" in row:
        row["pull_gb_per_s"] = round(gb / row["pull_ms"] * 1e3, 1)
    if rank == 0:
        queue.put(row)
    dist.barrier()
    dist.destroy_process_group()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true", help="gloo processes with small sizes (tests the script)")
    parser.add_argument("--gpus", type=int, nargs="+", default=[4, 2])
    parser.add_argument("--tokens", type=int, default=18 * 44 * 76)
    parser.add_argument("--heads", type=int, default=24)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--env",
        nargs="+",
        default=[""],
        help="NCCL settings per variant, e.g. '' 'NCCL_MAX_NCHANNELS=8' (comma-separated KEY=VALUE)",
    )
    args = parser.parse_args()
    if args.tiny:
        args.tokens, args.heads, args.dim, args.repeats = 96, 8, 16, 4
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    context = mp.get_context("spawn")
    for world, groups, env in ((w, g, e) for w in args.gpus for g in args.groups for e in args.env):
        queue = context.Queue()
        run = argparse.Namespace(**{**vars(args), "groups": groups, "env": env})
        port = free_port()
        procs = [context.Process(target=worker, args=(r, world, port, run, queue)) for r in range(world)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=300)
        row = queue.get(timeout=5) if not queue.empty() else dict(gpus=world, groups=groups, env=env, error="no result")
        print(row, flush=True)
        rows.append(row)
        (args.out / "bench_exchange_rows.json").write_text(json.dumps(rows, indent=1))
    env = dict(
        date=datetime.date.today().isoformat(),
        torch=torch.__version__,
        card="cpu" if args.tiny else torch.cuda.get_device_name(),
        gpus=torch.cuda.device_count(),
    )
    (args.out / "bench_exchange.json").write_text(json.dumps(dict(environment=env, rows=rows), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
